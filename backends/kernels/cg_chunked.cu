// cg_chunked.cu -- the three kernels of the chunked conjugate-gradient solve.
//
// The host side is backends/chunked_cg.py::chunked_cg_solve (which also states each kernel's
// arithmetic and runs a NumPy emulation of it in CI); the plan is backends/cuda_plan.py.
// Per CG step of all rows: Ap = P YtY (one cuBLAS GEMM), cg_sparse adds the sparse part
// sum_i (c_ui - 1) (y_i . p_u) y_i chunk by chunk, cg_update takes the step.
//
//   cg_sparse<T, PER_LANE, VECTOR>  one warp per chunk of <= CHUNK_ENTRIES entries of one row:
//       out[u] += sum_{i in chunk} (with_b * c * [data > 0] + sign * (c - 1) (y_i . v_u)) y_i
//       with c = |data|. The chunk's sum is kept in registers and added once at the end: a
//       row's only chunk adds it directly, chunks of a longer row add theirs with atomicAdd
//       (the segmented reduction), so no row is longer than CHUNK_ENTRIES for the scheduler.
//       Rows with active[u] == 0 are skipped.
//   cg_init<A>            one warp per row: r -= xYtY; p = r; rsold = r.r; active =
//       rsold >= tolerance (false for NaN); an empty row gets x = p = 0 and is inactive.
//   cg_update<A, PER_LANE>  one warp per active row: alpha = rsold / p.Ap; x += alpha p;
//       r -= alpha Ap; the row stops unless r.r >= tolerance (NaN stops it), else
//       p = r + (r.r / rsold) p and rsold = r.r.
//
// Lane layouts (backends/cuda_plan.py::factor_layout): VECTOR, factors == 32 * PER_LANE and
// lane l owns values [l * PER_LANE, (l + 1) * PER_LANE), loaded as 16-byte words (or one
// narrower word when a lane's share is smaller); strided, any factors <= 32 * PER_LANE and
// lane l owns l, l + 32, ... (values past the end read as 0 and are never written).
//
// Launch geometry (backends/cuda_plan.py::warp_geometry): block = 256 threads (8 warps),
// grid = ceil(items / 8) blocks, one-dimensional, no dynamic shared memory; warps past the
// last chunk or row return at once, as a whole warp (every branch around a warp_sum depends
// only on the chunk or row, so full-mask shuffles are safe).
// Assumptions: indices, indptr and the chunk arrays are int32 and in range (the model checks
// the matrix; plan_chunks makes the chunks); data is float32; Y, V, out, x, r, p, Ap are
// C-contiguous with `factors` columns; for VECTOR every row start is aligned to a lane's
// share, capped at 16 bytes (the host checks the base pointers).

#include "common.cuh"

template <int BYTES>
struct word_type;
template <>
struct word_type<2> {
    typedef unsigned short type;
};
template <>
struct word_type<4> {
    typedef unsigned int type;
};
template <>
struct word_type<8> {
    typedef uint2 type;
};
template <>
struct word_type<16> {
    typedef uint4 type;
};

// The PER_LANE values of `row` that `lane` owns, in the compute type.
template <typename T, int PER_LANE, bool VECTOR>
__device__ __forceinline__ void load_lane(const T* __restrict__ row, int factors, int lane,
                                          compute_t<T> (&out)[PER_LANE]) {
    if constexpr (VECTOR) {
        constexpr int BYTES = static_cast<int>(sizeof(T)) * PER_LANE;
        constexpr int WORD = BYTES >= 16 ? 16 : BYTES;
        typedef typename word_type<WORD>::type Word;
        Word words[BYTES / WORD];
        const Word* source = reinterpret_cast<const Word*>(row + lane * PER_LANE);
#pragma unroll
        for (int w = 0; w < BYTES / WORD; ++w) words[w] = source[w];
        const T* values = reinterpret_cast<const T*>(words);
#pragma unroll
        for (int k = 0; k < PER_LANE; ++k) out[k] = to_compute(values[k]);
    } else {
#pragma unroll
        for (int k = 0; k < PER_LANE; ++k) {
            const int j = lane + 32 * k;
            out[k] = j < factors ? to_compute(row[j]) : compute_t<T>(0);
        }
    }
}

// row[owned values] += values, atomically when other warps add into the same row.
template <typename A, int PER_LANE, bool VECTOR>
__device__ __forceinline__ void add_lane(A* __restrict__ row, int factors, int lane,
                                         const A (&values)[PER_LANE], bool atomic) {
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
        const int j = VECTOR ? lane * PER_LANE + k : lane + 32 * k;
        if (VECTOR || j < factors) {
            if (atomic) {
                atomicAdd(row + j, values[k]);
            } else {
                row[j] += values[k];
            }
        }
    }
}

// The chunk or row of this warp: warp w of block b handles item b * warps_per_block + w.
__device__ __forceinline__ long long warp_item() {
    return static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
}

template <typename A, int PER_LANE>
__device__ __forceinline__ A lane_dot(const A (&a)[PER_LANE], const A (&b)[PER_LANE]) {
    A total = A(0);
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) total += a[k] * b[k];
    return total;
}

// entries gathered before their dot products are reduced: enough loads in flight to hide
// the gather's latency without spilling registers (UNROLL x PER_LANE values of y per lane)
template <int PER_LANE>
struct sparse_unroll {
    static constexpr int value = PER_LANE <= 8 ? 4 : (PER_LANE <= 16 ? 2 : 1);
};

template <typename T, int PER_LANE, bool VECTOR>
__global__ void __launch_bounds__(256)
    cg_sparse(const int* __restrict__ chunk_row, const int* __restrict__ chunk_begin,
              const int* __restrict__ chunk_end, int n_chunks, const int* __restrict__ indptr,
              const int* __restrict__ indices, const float* __restrict__ data,
              const T* __restrict__ Y, const compute_t<T>* __restrict__ V,
              compute_t<T>* __restrict__ out, const int* __restrict__ active, int factors,
              int with_b, compute_t<T> sign) {
    typedef compute_t<T> A;
    constexpr int UNROLL = sparse_unroll<PER_LANE>::value;
    const int lane = threadIdx.x & 31;
    const long long chunk = warp_item();
    if (chunk >= n_chunks) return;
    const int row = chunk_row[chunk];
    if (active[row] == 0) return;
    const int begin = chunk_begin[chunk];
    const int end = chunk_end[chunk];

    A v[PER_LANE];
    A total[PER_LANE];
    load_lane<A, PER_LANE, VECTOR>(V + static_cast<long long>(row) * factors, factors, lane, v);
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) total[k] = A(0);

    int index = begin;
    for (; index + UNROLL <= end; index += UNROLL) {
        A y[UNROLL][PER_LANE];
        A dot[UNROLL];
#pragma unroll
        for (int e = 0; e < UNROLL; ++e) {
            const long long column = indices[index + e];
            load_lane<T, PER_LANE, VECTOR>(Y + column * factors, factors, lane, y[e]);
        }
#pragma unroll
        for (int e = 0; e < UNROLL; ++e) dot[e] = warp_sum(lane_dot<A, PER_LANE>(y[e], v));
#pragma unroll
        for (int e = 0; e < UNROLL; ++e) {
            const A value = static_cast<A>(data[index + e]);
            const A confidence = absolute(value);
            A weight = sign * (confidence - A(1)) * dot[e];
            if (with_b && value > A(0)) weight += confidence;
#pragma unroll
            for (int k = 0; k < PER_LANE; ++k) total[k] += weight * y[e][k];
        }
    }
    for (; index < end; ++index) {
        A y[PER_LANE];
        load_lane<T, PER_LANE, VECTOR>(Y + static_cast<long long>(indices[index]) * factors,
                                       factors, lane, y);
        const A dot = warp_sum(lane_dot<A, PER_LANE>(y, v));
        const A value = static_cast<A>(data[index]);
        const A confidence = absolute(value);
        A weight = sign * (confidence - A(1)) * dot;
        if (with_b && value > A(0)) weight += confidence;
#pragma unroll
        for (int k = 0; k < PER_LANE; ++k) total[k] += weight * y[k];
    }
    const bool whole_row = begin == indptr[row] && end == indptr[row + 1];
    add_lane<A, PER_LANE, VECTOR>(out + static_cast<long long>(row) * factors, factors, lane,
                                  total, !whole_row);
}

template <typename A>
__global__ void __launch_bounds__(256)
    cg_init(A* __restrict__ x, A* __restrict__ r, A* __restrict__ p, const A* __restrict__ xYtY,
            const int* __restrict__ indptr, A* __restrict__ rsold, int* __restrict__ active,
            int n_rows, int factors, A tolerance) {
    const int lane = threadIdx.x & 31;
    const long long row = warp_item();
    if (row >= n_rows) return;
    const long long offset = row * factors;
    if (indptr[row] == indptr[row + 1]) {
        // p too: the next step's GEMM reads every row of p, inactive ones included
        for (int j = lane; j < factors; j += 32) {
            x[offset + j] = A(0);
            p[offset + j] = A(0);
        }
        if (lane == 0) {
            rsold[row] = A(0);
            active[row] = 0;
        }
        return;
    }
    A partial = A(0);
    for (int j = lane; j < factors; j += 32) {
        const A value = r[offset + j] - xYtY[offset + j];
        r[offset + j] = value;
        p[offset + j] = value;
        partial += value * value;
    }
    const A rs = warp_sum(partial);
    if (lane == 0) {
        rsold[row] = rs;
        active[row] = rs >= tolerance ? 1 : 0;  // a NaN residual is not >= anything: stop
    }
}

template <typename A, int PER_LANE>
__global__ void __launch_bounds__(256)
    cg_update(A* __restrict__ x, A* __restrict__ r, A* __restrict__ p, const A* __restrict__ Ap,
              A* __restrict__ rsold, int* __restrict__ active, int n_rows, int factors,
              A tolerance) {
    const int lane = threadIdx.x & 31;
    const long long row = warp_item();
    if (row >= n_rows || active[row] == 0) return;
    const long long offset = row * factors;
    const A rs_old = rsold[row];
    A pv[PER_LANE];
    A apv[PER_LANE];
    A rv[PER_LANE];
    load_lane<A, PER_LANE, false>(p + offset, factors, lane, pv);
    load_lane<A, PER_LANE, false>(Ap + offset, factors, lane, apv);
    const A alpha = rs_old / warp_sum(lane_dot<A, PER_LANE>(pv, apv));
    A partial = A(0);
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
        const int j = lane + 32 * k;
        rv[k] = A(0);
        if (j < factors) {
            x[offset + j] += alpha * pv[k];
            rv[k] = r[offset + j] - alpha * apv[k];
            r[offset + j] = rv[k];
            partial += rv[k] * rv[k];
        }
    }
    const A rs_new = warp_sum(partial);
    __syncwarp();  // every lane has read rsold and active before lane 0 rewrites them
    if (!(rs_new >= tolerance)) {  // converged, or NaN: keep this x, take no further step
        if (lane == 0) active[row] = 0;
        return;
    }
    const A beta = rs_new / rs_old;
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
        const int j = lane + 32 * k;
        if (j < factors) p[offset + j] = rv[k] + beta * pv[k];
    }
    if (lane == 0) rsold[row] = rs_new;
}
