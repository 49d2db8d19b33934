// topk.cu -- filtering and exact top-k selection of a block of scores, one block per query.
//
// backends/cupy_cuda.py computes scores = queries @ factors.T for a batch of queries with
// cuBLAS, then:
//   exclude_ids  sets the scores of each query's excluded ids (a CSR row) and of the ids no
//                query may return to -inf;
//   topk_select  writes, for each segment of each query's row of scores, the ids of the
//                segment's k best scores, ranking by score descending and ties by id
//                ascending (the order of backends/base.py topk). A long row is cut into
//                several segments (backends/cuda_plan.py::topk_segments), one block each,
//                so one row never runs on a single SM; every segment holds at least k ids.
// The host then orders the segments' candidates of every row by (score desc, id asc), keeps
// the first k and turns ids whose score is -inf into -1.
//
// topk_select is an exact radix select on order_key(score) (common.cuh): one pass per 8 bits
// of the key narrows the prefix of the k-th best key K and the number of entries equal to K
// still to take. A final pass in id order writes every entry with key < K (in any order) and
// the first ones with key == K (lowest ids first), so ties at the cut are settled by id.
//
// Launch geometry (backends/cupy_cuda.py::CupyBackend._topk_on_device and _select):
//   exclude_ids: grid = rows of the batch, block = 128 threads (each strides over the row's
//                excluded ids); no shared memory.
//   topk_select: grid = rows of the batch x segments, block = TOPK_THREADS (a multiple of 32,
//                at most 1024) threads; static shared memory only (a 256-bin histogram).
//                out_ids holds k ids per block, segment by segment within a row.
// Assumptions: scores is a C-contiguous (rows, row_length) block; 1 <= k <= every
// segment's length; row_length < 2^31;
// excluded ids are in [0, n_items); exclude_indptr holds int32 offsets for every query of the
// whole call, and row_offset is the first query of this batch.

#include "common.cuh"

template <typename S>
__global__ void exclude_ids(S* __restrict__ scores, long long n_items, int row_offset,
                            const int* __restrict__ exclude_indptr,
                            const int* __restrict__ exclude_indices,
                            const long long* __restrict__ exclude_all, long long n_exclude_all) {
    S* row = scores + static_cast<long long>(blockIdx.x) * n_items;
    const S minus_inf = negative_infinity<S>();
    const int begin = exclude_indptr[row_offset + blockIdx.x];
    const int end = exclude_indptr[row_offset + blockIdx.x + 1];
    for (int index = begin + threadIdx.x; index < end; index += blockDim.x) {
        row[exclude_indices[index]] = minus_inf;
    }
    for (long long index = threadIdx.x; index < n_exclude_all; index += blockDim.x) {
        row[exclude_all[index]] = minus_inf;
    }
}

template <typename S>
__global__ void __launch_bounds__(1024)
    topk_select(const S* __restrict__ scores, long long row_length, long long segment_length,
                int segments, int k, int* __restrict__ out_ids) {
    typedef sort_key_t<S> K;
    __shared__ unsigned int histogram[256];
    __shared__ unsigned int warp_ties[32];
    __shared__ K shared_prefix;
    __shared__ long long shared_remaining;
    __shared__ unsigned int better_count;
    __shared__ long long ties_before;

    // block b selects from segment b % segments of row b / segments
    const long long begin = static_cast<long long>(blockIdx.x % segments) * segment_length;
    const long long end = begin + segment_length < row_length ? begin + segment_length : row_length;
    const long long n_items = end - begin;
    const S* row = scores + static_cast<long long>(blockIdx.x / segments) * row_length + begin;
    int* out = out_ids + static_cast<long long>(blockIdx.x) * k;

    // radix select: after the last pass `prefix` is the k-th best key, and `remaining` the
    // number of entries with exactly that key that belong to the top k (at least 1)
    K prefix = 0;
    K mask = 0;
    long long remaining = k;
    for (int shift = 8 * static_cast<int>(sizeof(K)) - 8; shift >= 0; shift -= 8) {
        for (int bin = threadIdx.x; bin < 256; bin += blockDim.x) histogram[bin] = 0u;
        __syncthreads();
        for (long long i = threadIdx.x; i < n_items; i += blockDim.x) {
            const K key = order_key(row[i]);
            if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 0xff], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            long long before = 0;
            int digit = 0;
            while (digit < 255 && before + histogram[digit] < remaining) {
                before += histogram[digit];
                ++digit;
            }
            shared_prefix = prefix | (static_cast<K>(digit) << shift);
            shared_remaining = remaining - before;
        }
        __syncthreads();
        prefix = shared_prefix;
        remaining = shared_remaining;
        mask |= static_cast<K>(0xff) << shift;
        __syncthreads();  // every thread has read the shared values before they are rewritten
    }

    // gather, in id order: entries better than the cut anywhere in [0, k - remaining), ties
    // at the cut in id order after them
    const long long n_better = k - remaining;
    if (threadIdx.x == 0) {
        better_count = 0u;
        ties_before = 0;
    }
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int n_warps = blockDim.x >> 5;
    for (long long base = 0; base < n_items; base += blockDim.x) {
        const long long i = base + threadIdx.x;
        const bool valid = i < n_items;
        const K key = valid ? order_key(row[i]) : K(0);
        const bool tie = valid && key == prefix;
        if (valid && key < prefix) out[atomicAdd(&better_count, 1u)] = static_cast<int>(begin + i);
        const unsigned int ballot = __ballot_sync(0xffffffffu, tie);
        if (lane == 0) warp_ties[warp] = __popc(ballot);
        __syncthreads();
        long long rank = ties_before + __popc(ballot & ((1u << lane) - 1u));
        for (int w = 0; w < warp; ++w) rank += warp_ties[w];
        if (tie && rank < remaining) out[n_better + rank] = static_cast<int>(begin + i);
        __syncthreads();
        if (threadIdx.x == 0) {
            long long total = 0;
            for (int w = 0; w < n_warps; ++w) total += warp_ties[w];
            ties_before += total;
        }
        __syncthreads();
    }
}
