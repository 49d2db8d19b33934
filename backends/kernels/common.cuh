// common.cuh -- types and warp/block helpers shared by the ALS kernels.
//
// Included by every .cu file here. backends/cupy_cuda.py pastes this header in front of the
// .cu files (dropping their local #include lines) and compiles the result once with NVRTC, so
// nothing here may include a system header: half-precision conversions use PTX directly.
//
// Type table (mirrors DTYPES in backends/cupy_cuda.py):
//   storage T     compute_t<T>   factor dtype
//   als_half      float          float16 (storage in half, every sum and product in float)
//   float         float          float32
//   double        double         float64

#ifndef ALS_KERNELS_COMMON_CUH
#define ALS_KERNELS_COMMON_CUH

// IEEE binary16 as stored by numpy/cupy float16; only loaded, converted and stored.
struct alignas(2) als_half {
    unsigned short bits;
};

template <typename T>
struct compute_type {
    typedef T type;
};
template <>
struct compute_type<als_half> {
    typedef float type;
};
template <typename T>
using compute_t = typename compute_type<T>::type;

__device__ __forceinline__ float to_compute(float value) { return value; }
__device__ __forceinline__ double to_compute(double value) { return value; }
__device__ __forceinline__ float to_compute(als_half value) {
    float result;
    asm("cvt.f32.f16 %0, %1;" : "=f"(result) : "h"(value.bits));
    return result;
}

template <typename T>
__device__ __forceinline__ T from_compute(compute_t<T> value);
template <>
__device__ __forceinline__ float from_compute<float>(float value) { return value; }
template <>
__device__ __forceinline__ double from_compute<double>(double value) { return value; }
template <>
__device__ __forceinline__ als_half from_compute<als_half>(float value) {
    als_half result;
    // round to nearest even, as numpy's astype(float16)
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(result.bits) : "f"(value));
    return result;
}

template <typename A>
__device__ __forceinline__ A absolute(A value) { return value < A(0) ? -value : value; }

// Sum over the 32 lanes of a warp; every lane gets the total. The whole warp must call it.
template <typename A>
__device__ __forceinline__ A warp_sum(A value) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        value += __shfl_xor_sync(0xffffffffu, value, offset);
    }
    return value;
}

// -- ordering keys for top-k -------------------------------------------------------------------
//
// order_key maps a score to an unsigned integer such that a better (larger) score has a
// smaller key, and equal scores (0.0 and -0.0 included) have equal keys. -inf (a filtered
// entry) gets the largest key of every number, NaN the largest key of all (it ranks last).
// backends/cuda_plan.py::order_key states the same map in NumPy.

template <typename S>
struct key_type;
template <>
struct key_type<float> {
    typedef unsigned int type;
};
template <>
struct key_type<double> {
    typedef unsigned long long type;
};
template <typename S>
using sort_key_t = typename key_type<S>::type;

// __host__ too, so a host program can check the encoding (tests/test_cuda.py); the bits are
// read through a union, which nvcc and NVRTC define as the bit cast it is meant to be.
__host__ __device__ __forceinline__ unsigned int order_key(float score) {
    if (score != score) return 0xffffffffu;  // NaN, either sign: after -inf, as NumPy sorts it
    union {
        float value;
        unsigned int bits;
    } cast;
    cast.value = score == 0.0f ? 0.0f : score;
    const unsigned int bits = cast.bits;
    const unsigned int ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
    return ~ascending;
}

__host__ __device__ __forceinline__ unsigned long long order_key(double score) {
    if (score != score) return 0xffffffffffffffffull;
    union {
        double value;
        unsigned long long bits;
    } cast;
    cast.value = score == 0.0 ? 0.0 : score;
    const unsigned long long bits = cast.bits;
    const unsigned long long ascending =
        (bits & 0x8000000000000000ull) ? ~bits : (bits | 0x8000000000000000ull);
    return ~ascending;
}

template <typename S>
__device__ __forceinline__ S negative_infinity();
template <>
__device__ __forceinline__ float negative_infinity<float>() { return __int_as_float(static_cast<int>(0xff800000u)); }
template <>
__device__ __forceinline__ double negative_infinity<double>() {
    return __longlong_as_double(static_cast<long long>(0xfff0000000000000ull));
}

#endif  // ALS_KERNELS_COMMON_CUH
