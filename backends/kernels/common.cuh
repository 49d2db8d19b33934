// common.cuh -- types and warp/block helpers shared by the ALS kernels.
//
// Included by every .cu file here. backends/cupy_cuda.py pastes this header in front of the
// .cu files (dropping their local #include lines) and compiles the result once with NVRTC, so
// nothing here may include a system header: the half-precision conversion uses PTX on the
// device. The same sources also compile with a host C++ compiler (tests/cuda_emulation runs
// them on the CPU in CI): what only the device has sits behind #ifdef __CUDA_ARCH__.
//
// Half values are only ever widened: the kernels compute and store in float and the host
// rounds a float16 result once, as NumPy's astype does.
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
#ifdef __CUDA_ARCH__
    float result;
    asm("cvt.f32.f16 %0, %1;" : "=f"(result) : "h"(value.bits));
    return result;
#else
    // A host compiler (tests/cuda_emulation runs these kernels on the CPU) has no PTX: the
    // same exact widening in integer arithmetic, NaN payloads kept as NumPy keeps them.
    const unsigned int sign = static_cast<unsigned int>(value.bits & 0x8000u) << 16;
    const unsigned int exponent = (value.bits >> 10) & 0x1fu;
    unsigned int mantissa = value.bits & 0x3ffu;
    union {
        unsigned int bits;
        float value;
    } cast;
    if (exponent == 0x1fu) {  // inf or NaN
        cast.bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0u) {  // normal: rebias 15 -> 127
        cast.bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0u) {  // +-0
        cast.bits = sign;
    } else {  // subnormal, mantissa * 2^-24: normalise it
        unsigned int biased = 113u;
        while ((mantissa & 0x400u) == 0u) {
            mantissa <<= 1;
            --biased;
        }
        cast.bits = sign | (biased << 23) | ((mantissa & 0x3ffu) << 13);
    }
    return cast.value;
#endif
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
