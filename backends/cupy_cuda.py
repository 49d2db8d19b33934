"""The GPU backend: CuPy arrays, cuBLAS for dense products, CUDA C++ kernels for the rest.

``CupyBackend`` is the array-module backend (``backends.xp_generic``) built on CuPy
(``xp=cupy``, ``sparse=cupyx.scipy.sparse``), so the loss parts, the Gram matrix, the norms
and the finiteness check run the same array code as the NumPy reference, on the device.
Replaced by kernels from ``backends/kernels`` (see each file's header comment) and planned
by ``backends.cuda_plan``:

- the conjugate-gradient solve: ``backends.chunked_cg.chunked_cg_solve`` with the kernels
  ``cg_sparse`` (one warp per chunk of at most ``CHUNK_ENTRIES`` entries of a row, so no
  row bounds a half-iteration), ``cg_init`` and ``cg_update``; ``Y^T Y`` times the search
  directions of all rows is one cuBLAS GEMM per CG step (plus one element-wise product
  when lambda is per row);
- the exact solve: ``backends.exact_gram`` forms each row's matrix from chunk Gram products
  (batched GEMMs), not one outer product per entry, then one batched ``cupy.linalg.solve``;
- ``exclude_ids`` and ``topk_select``: filtering and exact top-k selection of a block of
  scores computed by cuBLAS, each long row split among several blocks, batches sized from
  free memory, results kept on the device and copied to the host once.

Factor dtypes: float32, float64, and float16 for storage only: kernels load half values and
compute in float32, ``gram`` returns float32 and so do ``norms`` and ``topk`` scores (a
float16 score GEMM reads half factors and accumulates and writes float32, so the factors are
never widened). Confidences are stored as float32 on the device, the one type the kernels
read.

CuPy is imported when the backend is constructed, not when this module is imported, so that
``import backends.cupy_cuda`` works everywhere and construction raises
``BackendUnavailable`` saying what is missing.
"""

from __future__ import annotations

import functools
import importlib.resources
import re

import numpy as np
import scipy.sparse

from .base import (
    CG_TOLERANCE,
    BackendUnavailable,
    CudaOutOfMemoryError,
    as_int32,
    check_int32_ids,
    check_solve_operands,
)
from .chunked_cg import chunked_cg_solve
from .cuda_plan import (
    STRIDED_PER_LANE,
    VECTOR_PER_LANE,
    factor_layout,
    is_aligned,
    topk_batch_rows,
    topk_segments,
    warp_geometry,
)
from .exact_gram import EXACT_BLOCK_ELEMENTS, solve_exact
from .xp_generic import ArrayModuleBackend

__all__ = [
    "CupyBackend",
    "CudaOutOfMemoryError",
    "kernel_source",
    "name_expressions",
    "is_out_of_memory",
    "cg_kernel_names",
    "half_scores_gemm_arguments",
]

#: factor dtype -> (CUDA type the kernels store it as, dtype they compute and score in)
DTYPES = {
    np.dtype(np.float16): ("als_half", np.dtype(np.float32)),
    np.dtype(np.float32): ("float", np.dtype(np.float32)),
    np.dtype(np.float64): ("double", np.dtype(np.float64)),
}
#: storage types with a wide-load (vector layout) instance of cg_sparse
VECTOR_STORAGE = ("als_half", "float")
_COMPUTE_TYPES = ("float", "double")

#: kernel template -> the template argument lists the module instantiates
KERNELS = {
    "cg_sparse": [f"{t}, {n}, true" for t in VECTOR_STORAGE for n in VECTOR_PER_LANE]
    + [f"{t}, {n}, false" for t in ("als_half", "float", "double") for n in STRIDED_PER_LANE],
    "cg_init": list(_COMPUTE_TYPES),
    "cg_update": [f"{a}, {n}" for a in _COMPUTE_TYPES for n in STRIDED_PER_LANE],
    "exclude_ids": list(_COMPUTE_TYPES),
    "topk_select": list(_COMPUTE_TYPES),
}

#: CUDA sources, in the order they are pasted together (the header first)
KERNEL_FILES = ("common.cuh", "cg_chunked.cu", "topk.cu")
COMPILE_OPTIONS = ("-std=c++17",)

#: threads per block of topk_select (one block per segment of a query's scores)
TOPK_THREADS = 512
#: threads per block of exclude_ids (one block per query)
EXCLUDE_THREADS = 128

# cuBLAS / CUDA library constants for the float16 score GEMM (cublas_api.h, library_types.h)
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUDA_R_32F, CUDA_R_16F = 0, 2
CUBLAS_COMPUTE_32F = 68
CUBLAS_GEMM_DEFAULT = -1

# one whole line (not the blank lines around it: \s would match newlines)
_LOCAL_INCLUDE = re.compile(r'^[ \t]*#include[ \t]+"[^"\n]+"[ \t]*$', re.MULTILINE)
#: what a local #include line of the sources becomes in the translation unit (one line still)
PASTED_INCLUDE = "// (local header pasted in front)"
_ALLOCATION_FAILURES = ("ALLOC_FAILED", "cudaErrorMemoryAllocation", "out of memory")


def kernel_source():
    """Return the CUDA C++ of every kernel as one translation unit (what NVRTC compiles).

    The ``.cu`` files include ``common.cuh`` by name for ``nvcc``; here the header is pasted
    in front instead and each local ``#include`` line becomes a comment, so nothing is read
    from disk at compile time. Each file starts with a ``#line`` directive, so compiler
    messages name the file and line it came from.
    """
    package = importlib.resources.files(__package__).joinpath("kernels")
    parts = []
    for name in KERNEL_FILES:
        text = package.joinpath(name).read_text(encoding="utf-8")
        parts.append(f'#line 1 "{name}"\n' + _LOCAL_INCLUDE.sub(PASTED_INCLUDE, text))
    return "\n".join(parts)


def name_expressions():
    """Every template instance the module compiles, e.g. ``cg_sparse<float, 4, true>``."""
    return sorted(f"{kernel}<{args}>" for kernel, table in KERNELS.items() for args in table)


def storage_type(dtype):
    """The CUDA type factors of ``dtype`` are stored as."""
    return DTYPES[np.dtype(dtype)][0]


def compute_type(dtype):
    """The CUDA type the kernels compute in for factors of ``dtype``."""
    return DTYPES[DTYPES[np.dtype(dtype)][1]][0]


def cg_kernel_names(factors, dtype, aligned=True):
    """The ``(cg_sparse, cg_init, cg_update)`` instances a solve of ``factors`` in ``dtype`` runs.

    The vector layout needs a storage type with a vector instance and ``aligned`` factor
    arrays (``cuda_plan.is_aligned``); None when factors exceed the kernels' limit.
    """
    dtype = np.dtype(dtype)
    storage = storage_type(dtype)
    layout = factor_layout(factors, dtype.itemsize, storage in VECTOR_STORAGE, aligned)
    if layout is None:
        return None
    per_lane, vector = layout
    ctype = compute_type(dtype)
    strided = factor_layout(factors, dtype.itemsize, vector_types=False)[0]
    return (
        f"cg_sparse<{storage}, {per_lane}, {'true' if vector else 'false'}>",
        f"cg_init<{ctype}>",
        f"cg_update<{ctype}, {strided}>",
    )


def is_out_of_memory(exc, out_of_memory_type=()):
    """Whether ``exc`` says the GPU ran out of memory, wherever it came from.

    CuPy's own allocator raises ``out_of_memory_type`` (``cupy.cuda.memory.OutOfMemoryError``);
    cuBLAS, cuSPARSE and cuSOLVER report a failed workspace allocation as a status error
    (``CUBLAS_STATUS_ALLOC_FAILED`` and the like), the runtime as
    ``cudaErrorMemoryAllocation``.
    """
    if out_of_memory_type and isinstance(exc, out_of_memory_type):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(marker in text for marker in _ALLOCATION_FAILURES)


def half_scores_gemm_arguments(n_queries, n_items, factors):
    """Column-major ``gemmEx`` operands for ``scores = queries @ items.T`` in row-major arrays.

    A row-major (n_queries, n_items) score block is the column-major (n_items, n_queries)
    matrix ``items_cm^T queries_cm``, where the row-major (n_items, factors) item factors
    read column-major are ``items_cm`` (factors x n_items, ld = factors) and the queries
    likewise (factors x n_queries). Returns ``(transa, transb, m, n, k, lda, ldb, ldc)``;
    ``tests/test_cuda_plan.py`` checks it against NumPy with a column-major emulation.
    """
    return CUBLAS_OP_T, CUBLAS_OP_N, n_items, n_queries, factors, factors, factors, n_items


def _import_cupy():
    """Return ``(cupy, cupyx.scipy.sparse)``, or raise BackendUnavailable saying what is missing."""
    try:
        import cupy
        import cupyx.scipy.sparse
    except ImportError as exc:
        raise BackendUnavailable(
            f"the 'cuda' backend needs CuPy, which is not installed ({exc}): "
            "pip install cupy-cuda13x (or cupy-cuda12x for CUDA 12)"
        ) from exc
    except Exception as exc:  # CuPy installed but its CUDA libraries failed to load
        raise BackendUnavailable(f"the 'cuda' backend cannot load CuPy: {exc}") from exc
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver, driver too old, no device
        raise BackendUnavailable(
            f"the 'cuda' backend found CuPy but no usable CUDA device or driver: {exc}"
        ) from exc
    if devices == 0:
        raise BackendUnavailable("the 'cuda' backend found CuPy but no CUDA device")
    return cupy, cupyx.scipy.sparse


@functools.cache
def _module(device_id):
    """The compiled RawModule for one device, every kernel fetched once to check its name."""
    import cupy

    with cupy.cuda.Device(device_id):
        module = cupy.RawModule(
            code=kernel_source(), options=COMPILE_OPTIONS, name_expressions=name_expressions()
        )
        for name in name_expressions():
            module.get_function(name)
    return module


class CupyBackend(ArrayModuleBackend):
    """CUDA backend on CuPy: factors and interactions stay in GPU memory from fit to query.

    Parameters
    ----------
    num_threads : int
        Accepted for a uniform constructor; the GPU has no CPU thread pool to size.

    Raises
    ------
    BackendUnavailable
        When CuPy is not installed, no CUDA device or driver is usable, or CuPy cannot
        compile kernels here (NVRTC missing).
    """

    name = "cuda"
    dtypes = tuple(DTYPES)

    def __init__(self, num_threads=0):
        cupy, sparse = _import_cupy()
        super().__init__(num_threads=num_threads, xp=cupy, sparse=sparse)
        self.device_id = cupy.cuda.runtime.getDevice()
        properties = cupy.cuda.runtime.getDeviceProperties(self.device_id)
        self.sm_count = int(properties["multiProcessorCount"])
        try:
            _module(self.device_id)
        except cupy.cuda.compiler.CompileException:
            raise  # a bug in the kernels, not a missing package: never skip over it
        except Exception as exc:
            raise BackendUnavailable(
                f"the 'cuda' backend cannot compile its kernels with CuPy here: {exc}"
            ) from exc

    def _device(self):
        """Context in which every allocation and launch of this backend happens."""
        return self.xp.cuda.Device(self.device_id)

    def launch(self, name, grid, block, args):
        """Launch the template instance ``name`` (e.g. ``cg_init<float>``) on this device."""
        with self._device():
            _module(self.device_id).get_function(name)(grid, block, args)

    # -- memory -------------------------------------------------------------------------

    def to_device(self, array_or_csr):
        xp = self.xp
        with self._device():
            if self.sparse.issparse(array_or_csr):
                return array_or_csr.tocsr()
            if scipy.sparse.issparse(array_or_csr):
                csr = scipy.sparse.csr_matrix(array_or_csr)
                if csr.nnz > np.iinfo(np.int32).max:
                    raise ValueError(
                        f"the 'cuda' backend holds at most 2**31 - 1 stored entries, got {csr.nnz}"
                    )
                # float32 once here, the one confidence type the kernels read: no copy per
                # half-iteration (cuSPARSE has no float16 or integer CSR either)
                return self.sparse.csr_matrix(
                    (
                        xp.asarray(csr.data.astype(np.float32, copy=False)),
                        xp.asarray(as_int32(csr.indices, "indices", csr.shape[1])),
                        xp.asarray(csr.indptr.astype(np.int32, copy=False)),
                    ),
                    shape=csr.shape,
                )
            return xp.ascontiguousarray(xp.asarray(array_or_csr))

    def to_host(self, array):
        if isinstance(array, self.xp.ndarray):
            with self._device():
                return self.xp.asnumpy(array)
        return np.asarray(array)

    # -- factor algebra -------------------------------------------------------------------

    def gram(self, Y, regularization):
        # in the compute dtype: a float16 Gram matrix would lose lambda and most digits
        with self._device():
            return super().gram(Y.astype(DTYPES[Y.dtype][1], copy=False), regularization)

    def norms(self, factors):
        with self._device():
            return super().norms(factors.astype(DTYPES[factors.dtype][1], copy=False))

    def loss_parts(self, Cui, X, Y):
        with self._device():
            return super().loss_parts(Cui, X, Y)

    def squared_norm(self, array, row_weights=None):
        with self._device():
            return super().squared_norm(array, row_weights)

    def all_finite(self, array):
        with self._device():
            return super().all_finite(array)

    def solve(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        check_solve_operands(Cui, X, Y, YtY, DTYPES)
        compute = DTYPES[X.dtype][1]
        if row_regularization is not None and row_regularization.shape != (X.shape[0],):
            raise ValueError(
                f"row_regularization has shape {row_regularization.shape}, expected ({X.shape[0]},)"
            )
        if X.shape[0] == 0:
            return
        with self._device():
            try:
                YtY = self.xp.ascontiguousarray(YtY, dtype=compute)
                if row_regularization is not None:  # float16 lambdas are widened once here
                    row_regularization = row_regularization.astype(compute, copy=False)
                if cg_steps is None:
                    solve_exact(
                        self.xp,
                        self.sparse,
                        _as_kernel_csr(self.xp, Cui),
                        X,
                        Y,
                        YtY,
                        row_regularization=row_regularization,
                    )
                elif factor_layout(X.shape[1], X.itemsize) is None:
                    self._solve_reference(Cui, X, Y, YtY, cg_steps, row_regularization)
                else:
                    kernels = CgKernels(self, X, Y)
                    chunked_cg_solve(
                        self.xp,
                        kernels,
                        _as_kernel_csr(self.xp, Cui),
                        X,
                        Y,
                        YtY,
                        cg_steps,
                        CG_TOLERANCE,
                        row_regularization=row_regularization,
                    )
            except Exception as exc:
                if not is_out_of_memory(exc, self.xp.cuda.memory.OutOfMemoryError):
                    raise
                raise self._solve_memory_error(exc, Cui, X, Y, cg_steps) from exc

    def _solve_memory_error(self, exc, Cui, X, Y, cg_steps):
        compute = DTYPES[X.dtype][1]
        exact = cg_steps is None
        working = Cui.nnz * 12 + (X.size + Y.size) * X.itemsize
        if exact:  # a block of row matrices and of chunk Gram products
            working += EXACT_BLOCK_ELEMENTS * compute.itemsize
        else:  # x, r, p, Ap in the compute dtype, the chunk plan
            working += 4 * X.size * compute.itemsize + 3 * 4 * (Cui.nnz // 256 + X.shape[0])
        return CudaOutOfMemoryError(
            f"CUDA ran out of memory solving {X.shape[0]:,} rows x {X.shape[1]} factors "
            f"({Cui.nnz:,} stored entries, {X.dtype} factors, "
            f"{'exact solve' if exact else f'{cg_steps} CG steps'}): the step needs about "
            f"{_gib(working)} of GPU memory ({type(exc).__name__}: {str(exc).rstrip('.')}). "
            "Free GPU memory, or use dtype=float16, fewer factors"
            + (", or CG (use_cg=True) instead of the exact solve" if exact else "")
        )

    def _solve_reference(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        """The inherited array-code CG, in the compute dtype, for more factors than kernels take.

        ``YtY`` and ``row_regularization`` are in the compute dtype already.
        """
        compute = DTYPES[X.dtype][1]
        if X.dtype == compute:
            super().solve(Cui, X, Y, YtY, cg_steps, row_regularization)
            return
        X_compute = X.astype(compute)
        super().solve(Cui, X_compute, Y.astype(compute), YtY, cg_steps, row_regularization)
        X[...] = X_compute.astype(X.dtype)

    # -- top-k ----------------------------------------------------------------------------

    def topk(self, queries, factors, k, exclude=None, exclude_all=None, norms=None):
        xp = self.xp
        n_queries, n_items = queries.shape[0], factors.shape[0]
        compute = DTYPES[factors.dtype][1]
        check_int32_ids(n_items, "factors")
        if n_queries == 0 or k == 0:
            return np.full((n_queries, k), -1, np.int32), np.full((n_queries, k), -np.inf, compute)
        segments, segment_length = topk_segments(n_items, k)
        with self._device():
            rows_per_batch = topk_batch_rows(
                n_queries,
                n_items,
                k,
                segments,
                compute.itemsize,
                self._free_bytes(),
                self.sm_count,
            )
            try:
                plan = (rows_per_batch, segments, segment_length)
                filters = (exclude, exclude_all, norms)
                ids, scores = self._topk_on_device(queries, factors, k, filters, plan)
                return self.to_host(ids), self.to_host(scores)  # the one copy to the host
            except Exception as exc:
                if not is_out_of_memory(exc, xp.cuda.memory.OutOfMemoryError):
                    raise
                rows = min(rows_per_batch, n_queries)
                working = (n_queries + n_items) * factors.shape[1] * factors.itemsize
                working += rows * n_items * compute.itemsize + rows * segments * k * 48
                working += n_queries * k * (4 + compute.itemsize)
                raise CudaOutOfMemoryError(
                    f"CUDA ran out of memory ranking {n_items:,} candidates for {n_queries:,} "
                    f"queries ({factors.shape[1]} factors, k={k}, {rows:,} queries per batch): "
                    f"needs about {_gib(working)} of GPU memory ({type(exc).__name__}: "
                    f"{str(exc).rstrip('.')}). Ask for fewer queries per call, a smaller N, "
                    "or use dtype=float16 factors"
                ) from exc

    def _free_bytes(self):
        """Device memory free for a new allocation: the driver's free plus CuPy's cached blocks."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def _topk_on_device(self, queries, factors, k, filters, plan):
        """``topk`` on the device: ``filters`` is ``(exclude, exclude_all, norms)``, ``plan``
        ``(rows_per_batch, segments, segment_length)``; ids and scores stay on the device."""
        exclude, exclude_all, norms = filters
        rows_per_batch, segments, segment_length = plan
        xp = self.xp
        n_queries, n_items = queries.shape[0], factors.shape[0]
        compute = DTYPES[factors.dtype][1]
        norms = None if norms is None else norms.astype(compute, copy=False)
        if exclude is None:
            exclude_indptr = xp.zeros(n_queries + 1, dtype=xp.int32)
            exclude_indices = xp.zeros(1, dtype=xp.int32)
        else:
            exclude_indptr = exclude.indptr.astype(xp.int32, copy=False)
            exclude_indices = as_int32(exclude.indices, "exclude.indices", exclude.shape[1])
        if exclude_all is None:
            exclude_all = xp.zeros(1, dtype=xp.int64)
            n_exclude_all = 0
        else:
            exclude_all = xp.ascontiguousarray(exclude_all, dtype=xp.int64).ravel()
            n_exclude_all = exclude_all.size
        ids = xp.empty((n_queries, k), dtype=xp.int32)
        scores = xp.empty((n_queries, k), dtype=compute)
        ctype = compute_type(factors.dtype)
        for start in range(0, n_queries, rows_per_batch):
            stop = min(start + rows_per_batch, n_queries)
            block = self._scores(queries[start:stop], factors)
            if norms is not None:
                block /= norms
            self.launch(
                f"exclude_ids<{ctype}>",
                (stop - start,),
                (EXCLUDE_THREADS,),
                (
                    block,
                    np.int64(n_items),
                    np.int32(start),
                    exclude_indptr,
                    exclude_indices,
                    exclude_all,
                    np.int64(n_exclude_all),
                ),
            )
            ids[start:stop], scores[start:stop] = self._select_top_k(
                block, k, segments, segment_length
            )
        return ids, scores

    def _scores(self, queries, factors):
        """``queries @ factors.T`` in the compute dtype, by cuBLAS; float16 is never widened."""
        xp = self.xp
        compute = DTYPES[factors.dtype][1]
        if factors.dtype != np.float16 or queries.dtype != np.float16:
            return queries.astype(compute, copy=False) @ factors.astype(compute, copy=False).T
        queries = xp.ascontiguousarray(queries)
        factors = xp.ascontiguousarray(factors)
        block = xp.empty((queries.shape[0], factors.shape[0]), dtype=np.float32)
        transa, transb, m, n, k, lda, ldb, ldc = half_scores_gemm_arguments(
            queries.shape[0], factors.shape[0], factors.shape[1]
        )
        try:
            from cupy_backends.cuda.libs import cublas
        except ImportError:  # where CuPy's own binding lives elsewhere
            cublas = xp.cuda.cublas
        one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)  # host scalars
        cublas.gemmEx(
            xp.cuda.device.get_cublas_handle(),
            transa,
            transb,
            m,
            n,
            k,
            one.ctypes.data,
            factors.data.ptr,
            CUDA_R_16F,
            lda,
            queries.data.ptr,
            CUDA_R_16F,
            ldb,
            zero.ctypes.data,
            block.data.ptr,
            CUDA_R_32F,
            ldc,
            CUBLAS_COMPUTE_32F,
            CUBLAS_GEMM_DEFAULT,
        )
        return block

    def _select_top_k(self, scores, k, segments=1, segment_length=None):
        """Top ``k`` of each row of a device score block: by score desc, ties by id asc."""
        xp = self.xp
        rows, n_items = scores.shape
        segment_length = n_items if segment_length is None else segment_length
        width = segments * k
        candidates = xp.empty((rows, width), dtype=xp.int32)
        self.launch(
            f"topk_select<{DTYPES[scores.dtype][0]}>",
            (rows * segments,),
            (TOPK_THREADS,),
            (
                scores,
                np.int64(n_items),
                np.int64(segment_length),
                np.int32(segments),
                np.int32(k),
                candidates,
            ),
        )
        # the segments' candidates come in no useful order: sort them by (row, NaN last,
        # -score, id); every key is exact in float64 (ids < 2**31, scores float32/64)
        candidate_scores = xp.take_along_axis(scores, candidates, axis=1).ravel()
        nan = xp.isnan(candidate_scores)
        keys = xp.stack(
            [
                candidates.ravel().astype(xp.float64),
                -xp.where(nan, 0, candidate_scores).astype(xp.float64),
                nan.astype(xp.float64),
                (xp.arange(rows * width, dtype=xp.int64) // width).astype(xp.float64),
            ]
        )
        order = xp.lexsort(keys).reshape(rows, width)[:, :k]
        ids = candidates.ravel()[order]
        best = candidate_scores[order]
        ids[best == -xp.inf] = -1
        return ids, best


class CgKernels:
    """The three CG kernels of ``chunked_cg_solve`` launched on the GPU (see that module).

    One instance per solve: it picks the factor bucket and lane layout once, from the
    factor count, the storage dtype and the alignment of the factor arrays.
    """

    def __init__(self, backend, X, Y):
        self.backend = backend
        self.factors = X.shape[1]
        self.compute = DTYPES[X.dtype][1]
        per_lane, _ = factor_layout(self.factors, X.itemsize)
        # the work arrays are fresh allocations; X may be a view, Y anything
        aligned = all(
            is_aligned(array.data.ptr, self.factors, per_lane, array.itemsize) for array in (X, Y)
        )
        self.sparse_name, self.init_name, self.update_name = cg_kernel_names(
            self.factors, X.dtype, aligned
        )

    def sparse(self, plan, Cui, Y, V, out, active, with_b, sign):
        chunk_row, chunk_begin, chunk_end = plan
        if len(chunk_row) == 0:
            return
        grid, block = warp_geometry(len(chunk_row))
        self.backend.launch(
            self.sparse_name,
            grid,
            block,
            (
                chunk_row,
                chunk_begin,
                chunk_end,
                np.int32(len(chunk_row)),
                Cui.indptr,
                Cui.indices,
                Cui.data,
                Y,
                V,
                out,
                active,
                np.int32(self.factors),
                np.int32(bool(with_b)),
                self.compute.type(sign),
            ),
        )

    def init(self, x, r, p, xYtY, indptr, rsold, active, tolerance):
        self._launch_per_row(self.init_name, (x, r, p, xYtY, indptr, rsold, active), tolerance)

    def update(self, x, r, p, Ap, rsold, active, tolerance):
        self._launch_per_row(self.update_name, (x, r, p, Ap, rsold, active), tolerance)

    def _launch_per_row(self, name, arrays, tolerance):
        """One warp per row of ``arrays[0]``: the arrays, then n_rows, factors, tolerance."""
        rows = arrays[0].shape[0]
        grid, block = warp_geometry(rows)
        scalars = (np.int32(rows), np.int32(self.factors), self.compute.type(tolerance))
        self.backend.launch(name, grid, block, (*arrays, *scalars))


def _as_kernel_csr(xp, Cui):
    """``Cui`` with the int32 indices and float32 confidences the kernels read (no copy when
    ``to_device`` made it, as it does for the model)."""
    if (
        Cui.data.dtype == np.float32
        and Cui.indices.dtype == np.int32
        and Cui.indptr.dtype == np.int32
    ):
        return Cui
    return type(Cui)(
        (
            Cui.data.astype(np.float32, copy=False),
            Cui.indices.astype(np.int32, copy=False),
            Cui.indptr.astype(np.int32, copy=False),
        ),
        shape=Cui.shape,
    )


def _gib(count):
    return f"{count / 2**30:.2f} GiB"
