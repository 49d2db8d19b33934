// cg_solve.cu -- conjugate-gradient update of every row of X, one warp per row.
//
// The CUDA statement of backends/numba_cpu.py::_cg_solve (same names, same arithmetic, same
// stopping threshold), for the row u handled by a warp, with c_ui = |data|, p_ui = [data > 0]:
//
//   A x = YtY x + sum_i (c_ui - 1) (y_i . x) y_i        (YtY = Y^T Y + lambda I, precomputed)
//   r = b - A x,  b = sum_{p_ui = 1} c_ui y_i;  p = r
//   up to cg_steps times: alpha = r.r / p.Ap; x += alpha p; r -= alpha Ap;
//                         stop once r.r < tolerance; p = r + (r.r / r.r_old) p
//
// A row without entries becomes zero; a row whose first residual is already below the
// tolerance keeps its x (both as on the CPU).
//
// Launch geometry (backends/cupy_cuda.py::launch_geometry("cg_solve", ...)):
//   block  = 32 * warps_per_block threads; warp w of block b solves row b * warps_per_block + w
//   grid   = ceil(n_rows / warps_per_block) blocks, one-dimensional
//   shared = warps_per_block * 4 * factors * sizeof(compute_t<T>) bytes of dynamic shared
//            memory: each warp's x, r, p and Ap
// Assumptions: blockDim.x is a multiple of 32 and at most 256; any factors >= 1 (lane l owns
// elements l, l + 32, l + 64, ...); every branch that contains a warp_sum is taken by the
// whole warp (they depend only on the row), so full-mask shuffles are safe; indptr/indices
// are int32 (cupyx CSR) and in range (checked by the model); X, Y and YtY are C-contiguous;
// YtY is symmetric, so the column YtY[:, j] is read as the row YtY[j, :] (coalesced).

#include "common.cuh"

template <typename T>
__global__ void __launch_bounds__(256)
    cg_solve(const int* __restrict__ indptr, const int* __restrict__ indices,
             const compute_t<T>* __restrict__ data, T* __restrict__ X, const T* __restrict__ Y,
             const compute_t<T>* __restrict__ YtY, int n_rows, int factors, int cg_steps,
             compute_t<T> tolerance) {
    typedef compute_t<T> A;
    extern __shared__ double shared_words[];  // one declaration for every T: 8-byte aligned

    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const long long u = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + warp;
    if (u >= n_rows) return;  // the whole warp leaves together

    A* x = reinterpret_cast<A*>(shared_words) + static_cast<long long>(warp) * 4 * factors;
    A* r = x + factors;
    A* p = r + factors;
    A* Ap = p + factors;
    T* x_out = X + u * factors;
    const int start = indptr[u];
    const int stop = indptr[u + 1];

    if (start == stop) {
        for (int j = lane; j < factors; j += 32) x_out[j] = from_compute<T>(A(0));
        return;
    }
    for (int j = lane; j < factors; j += 32) x[j] = to_compute(x_out[j]);
    __syncwarp();

    // r = b - A x, with A x = YtY x + sum_i (c_ui - 1) (y_i . x) y_i
    for (int j = lane; j < factors; j += 32) {
        A total = A(0);
        for (int k = 0; k < factors; ++k) total += YtY[static_cast<long long>(k) * factors + j] * x[k];
        r[j] = -total;
    }
    for (int index = start; index < stop; ++index) {
        const T* y = Y + static_cast<long long>(indices[index]) * factors;
        A confidence = data[index];
        A weight = confidence > A(0) ? confidence : A(0);
        confidence = absolute(confidence);
        A partial = A(0);
        for (int j = lane; j < factors; j += 32) partial += to_compute(y[j]) * x[j];
        weight -= (confidence - A(1)) * warp_sum(partial);
        for (int j = lane; j < factors; j += 32) r[j] += weight * to_compute(y[j]);
    }
    A partial = A(0);
    for (int j = lane; j < factors; j += 32) {
        p[j] = r[j];
        partial += r[j] * r[j];
    }
    A rsold = warp_sum(partial);
    if (rsold < tolerance) return;

    for (int step = 0; step < cg_steps; ++step) {
        __syncwarp();  // p, written lane by lane, is read whole below
        for (int j = lane; j < factors; j += 32) {
            A total = A(0);
            for (int k = 0; k < factors; ++k) {
                total += YtY[static_cast<long long>(k) * factors + j] * p[k];
            }
            Ap[j] = total;
        }
        for (int index = start; index < stop; ++index) {
            const T* y = Y + static_cast<long long>(indices[index]) * factors;
            A dot = A(0);
            for (int j = lane; j < factors; j += 32) dot += to_compute(y[j]) * p[j];
            const A weight = (absolute(data[index]) - A(1)) * warp_sum(dot);
            for (int j = lane; j < factors; j += 32) Ap[j] += weight * to_compute(y[j]);
        }
        partial = A(0);
        for (int j = lane; j < factors; j += 32) partial += p[j] * Ap[j];
        const A alpha = rsold / warp_sum(partial);
        partial = A(0);
        for (int j = lane; j < factors; j += 32) {
            x[j] += alpha * p[j];
            r[j] -= alpha * Ap[j];
            partial += r[j] * r[j];
        }
        const A rsnew = warp_sum(partial);
        if (rsnew < tolerance) break;
        const A beta = rsnew / rsold;
        __syncwarp();  // every lane has finished reading p before it changes
        for (int j = lane; j < factors; j += 32) p[j] = r[j] + beta * p[j];
        rsold = rsnew;
    }
    for (int j = lane; j < factors; j += 32) x_out[j] = from_compute<T>(x[j]);
}
