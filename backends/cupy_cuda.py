"""The GPU backend: CuPy arrays, cuBLAS for dense products, CUDA C++ kernels for the rest.

``CupyBackend`` is the array-module backend (``backends.xp_generic``) built on CuPy
(``xp=cupy``, ``sparse=cupyx.scipy.sparse``), so the loss, the exact solve (one batched
``cupy.linalg.solve`` per block of rows) and the finiteness check run the same array code
as the NumPy reference, on the device. Three things are
replaced by kernels from ``backends/kernels`` (see each file's header comment):

- ``cg_solve``: the conjugate-gradient update, one warp per row, fused (no launch per row);
- ``exclude_ids`` and ``topk_select``: filtering and exact top-k selection of a block of
  scores computed by cuBLAS, batched over queries so the score block stays bounded.

Factor dtypes: float32, float64, and float16 for storage only: kernels load half values and
compute in float32, ``gram`` returns float32 and so do ``norms`` and ``topk`` scores.

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
    BLOCK_ELEMENTS,
    CG_TOLERANCE,
    BackendUnavailable,
    as_int32,
    check_int32_ids,
    check_solve_operands,
)
from .xp_generic import ArrayModuleBackend

__all__ = ["CupyBackend", "CudaOutOfMemoryError", "kernel_source", "name_expressions"]

#: factor dtype -> (CUDA type the kernels store it as, dtype they compute and score in)
DTYPES = {
    np.dtype(np.float16): ("als_half", np.dtype(np.float32)),
    np.dtype(np.float32): ("float", np.dtype(np.float32)),
    np.dtype(np.float64): ("double", np.dtype(np.float64)),
}

#: kernel template -> whether it is instantiated per storage type or per compute type
KERNELS = {"cg_solve": "storage", "exclude_ids": "compute", "topk_select": "compute"}

#: CUDA sources, in the order they are pasted together (the header first)
KERNEL_FILES = ("common.cuh", "cg_solve.cu", "topk.cu")
COMPILE_OPTIONS = ("-std=c++17",)

#: warps (rows) per block of cg_solve, and the dynamic shared memory a block may use
CG_WARPS_PER_BLOCK = 8
SHARED_MEMORY_LIMIT = 48 * 1024
#: threads per block of topk_select (one block per query)
TOPK_THREADS = 512
#: scores computed at once by topk: queries per batch = this // number of candidates
TOPK_BATCH_ELEMENTS = 1 << 26

_LOCAL_INCLUDE = re.compile(r'^\s*#include\s+"[^"]+"\s*$', re.MULTILINE)


class CudaOutOfMemoryError(MemoryError):
    """The GPU ran out of memory; the message gives the sizes involved and what to change."""


def kernel_source():
    """Return the CUDA C++ of every kernel as one translation unit (what NVRTC compiles).

    The ``.cu`` files include ``common.cuh`` by name for ``nvcc``; here the header is pasted
    in front instead and local ``#include`` lines are dropped, so nothing is read from disk
    at compile time.
    """
    package = importlib.resources.files("backends.kernels")
    parts = [package.joinpath(name).read_text(encoding="utf-8") for name in KERNEL_FILES]
    return "\n".join(_LOCAL_INCLUDE.sub("", part) for part in parts)


def name_expression(kernel, dtype):
    """The template instance of ``kernel`` for factors of ``dtype``, e.g. ``cg_solve<float>``."""
    storage, compute = DTYPES[np.dtype(dtype)]
    if KERNELS[kernel] == "compute":
        storage = DTYPES[compute][0]
    return f"{kernel}<{storage}>"


def name_expressions():
    """Every template instance the module compiles, from the dtype table."""
    return sorted({name_expression(kernel, dtype) for kernel in KERNELS for dtype in DTYPES})


def launch_geometry(kernel, rows, factors=0, itemsize=4):
    """Return ``(grid, block, shared_mem_bytes)`` for one launch of ``kernel`` over ``rows``.

    ``cg_solve`` runs one warp per row with the warp's x, r, p and Ap (``factors`` values of
    ``itemsize`` bytes each) in dynamic shared memory, so a block holds as many warps as fit
    the default 48 KiB limit, at most ``CG_WARPS_PER_BLOCK``; None when not even one fits
    (the caller then uses the reference CG). The top-k kernels run one block per query row.
    """
    if kernel == "cg_solve":
        per_warp = 4 * factors * itemsize
        warps = min(CG_WARPS_PER_BLOCK, SHARED_MEMORY_LIMIT // per_warp)
        if warps == 0:
            return None
        return ((rows + warps - 1) // warps,), (32 * warps,), warps * per_warp
    if kernel == "exclude_ids":
        return (rows,), (128,), 0
    if kernel == "topk_select":
        return (rows,), (TOPK_THREADS,), 0
    raise KeyError(kernel)


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
        try:
            _module(self.device_id)
        except cupy.cuda.compiler.CompileException:
            raise  # a bug in the kernels, not a missing package: never skip over it
        except Exception as exc:
            raise BackendUnavailable(
                f"the 'cuda' backend cannot compile its kernels with CuPy here: {exc}"
            ) from exc

    def _kernel(self, kernel, dtype):
        return _module(self.device_id).get_function(name_expression(kernel, dtype))

    # -- memory -------------------------------------------------------------------------

    def to_device(self, array_or_csr):
        xp = self.xp
        if self.sparse.issparse(array_or_csr):
            return array_or_csr.tocsr()
        if scipy.sparse.issparse(array_or_csr):
            csr = scipy.sparse.csr_matrix(array_or_csr)
            if csr.nnz > np.iinfo(np.int32).max:
                raise ValueError(
                    f"the 'cuda' backend holds at most 2**31 - 1 stored entries, got {csr.nnz}"
                )
            # cuSPARSE has no float16 or integer CSR; the kernels read the data as floats
            data = csr.data
            if data.dtype not in (np.float32, np.float64):
                data = data.astype(np.float32)
            return self.sparse.csr_matrix(
                (
                    xp.asarray(data),
                    xp.asarray(as_int32(csr.indices, "indices", csr.shape[1])),
                    xp.asarray(csr.indptr.astype(np.int32, copy=False)),
                ),
                shape=csr.shape,
            )
        return xp.ascontiguousarray(xp.asarray(array_or_csr))

    def to_host(self, array):
        if isinstance(array, self.xp.ndarray):
            return self.xp.asnumpy(array)
        return np.asarray(array)

    # -- factor algebra -------------------------------------------------------------------

    def gram(self, Y, regularization):
        # in the compute dtype: a float16 Gram matrix would lose lambda and most digits
        return super().gram(Y.astype(DTYPES[Y.dtype][1], copy=False), regularization)

    def norms(self, factors):
        return super().norms(factors.astype(DTYPES[factors.dtype][1], copy=False))

    def solve(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        check_solve_operands(Cui, X, Y, YtY, DTYPES)
        compute = DTYPES[X.dtype][1]
        geometry = launch_geometry("cg_solve", X.shape[0], X.shape[1], compute.itemsize)
        try:
            # a per-row lambda (frequency-scaled regularisation) takes the array-code path:
            # the fused kernel has no input for it yet
            if cg_steps is None or geometry is None or row_regularization is not None:
                self._solve_reference(Cui, X, Y, YtY, cg_steps, row_regularization)
            elif X.shape[0]:
                grid, block, shared = geometry
                self._kernel("cg_solve", X.dtype)(
                    grid,
                    block,
                    (
                        Cui.indptr.astype(np.int32, copy=False),
                        as_int32(Cui.indices, "Cui.indices", Cui.shape[1]),
                        Cui.data.astype(compute, copy=False),
                        X,
                        Y,
                        self.xp.ascontiguousarray(YtY, dtype=compute),
                        np.int32(X.shape[0]),
                        np.int32(X.shape[1]),
                        np.int32(cg_steps),
                        compute.type(CG_TOLERANCE),
                    ),
                    shared_mem=shared,
                )
        except self.xp.cuda.memory.OutOfMemoryError as exc:
            exact = cg_steps is None
            working = Cui.nnz * (8 + compute.itemsize) + (X.size + Y.size) * X.itemsize
            if exact:  # the reference holds one f x f outer product per entry of a block
                working += 3 * BLOCK_ELEMENTS * compute.itemsize
            raise CudaOutOfMemoryError(
                f"CUDA ran out of memory solving {X.shape[0]:,} rows x {X.shape[1]} factors "
                f"({Cui.nnz:,} stored entries, {X.dtype} factors, "
                f"{'exact solve' if exact else f'{cg_steps} CG steps'}): the step needs about "
                f"{_gib(working)} of GPU memory (CuPy: {str(exc).rstrip('.')}). "
                "Free GPU memory, or use dtype=float16, fewer factors"
                + (", or CG (use_cg=True) instead of the exact solve" if exact else "")
            ) from exc

    def _solve_reference(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        """The inherited array-code solve, in the compute dtype for float16 factors."""
        compute = DTYPES[X.dtype][1]
        YtY = YtY.astype(compute, copy=False)
        if row_regularization is not None:
            row_regularization = row_regularization.astype(compute, copy=False)
        if X.dtype == compute:
            super().solve(Cui, X, Y, YtY, cg_steps, row_regularization)
            return
        X_compute = X.astype(compute)
        super().solve(Cui, X_compute, Y.astype(compute), YtY, cg_steps, row_regularization)
        X[...] = X_compute.astype(X.dtype)

    def topk(self, queries, factors, k, exclude=None, exclude_all=None, norms=None):
        xp = self.xp
        n_queries, n_items = queries.shape[0], factors.shape[0]
        compute = DTYPES[factors.dtype][1]
        check_int32_ids(n_items, "factors")
        ids = np.full((n_queries, k), -1, dtype=np.int32)
        scores = np.full((n_queries, k), -np.inf, dtype=compute)
        if n_queries == 0 or k == 0:
            return ids, scores
        rows_per_batch = max(1, TOPK_BATCH_ELEMENTS // max(n_items, 1))
        try:
            queries = queries.astype(compute, copy=False)
            factors = factors.astype(compute, copy=False)
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
            for start in range(0, n_queries, rows_per_batch):
                stop = min(start + rows_per_batch, n_queries)
                block = queries[start:stop] @ factors.T  # cuBLAS GEMM
                if norms is not None:
                    block /= norms
                grid, threads, _ = launch_geometry("exclude_ids", stop - start)
                self._kernel("exclude_ids", compute)(
                    grid,
                    threads,
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
                block_ids, block_scores = self._select(block, k)
                ids[start:stop] = self.to_host(block_ids)
                scores[start:stop] = self.to_host(block_scores)
        except xp.cuda.memory.OutOfMemoryError as exc:
            rows = min(rows_per_batch, n_queries)
            working = (n_queries + n_items) * factors.shape[1] * compute.itemsize
            working += rows * n_items * compute.itemsize + rows * k * 48
            raise CudaOutOfMemoryError(
                f"CUDA ran out of memory ranking {n_items:,} candidates for {n_queries:,} "
                f"queries ({factors.shape[1]} factors, k={k}, {rows:,} queries per batch): "
                f"needs about {_gib(working)} of GPU memory (CuPy: {str(exc).rstrip('.')}). "
                "Ask for fewer queries per call, a smaller N, lower "
                "backends.cupy_cuda.TOPK_BATCH_ELEMENTS, or "
                "use dtype=float16 factors"
            ) from exc
        return ids, scores

    def _select(self, scores, k):
        """Top ``k`` of each row of a device score block: by score desc, ties by id asc."""
        xp = self.xp
        rows = scores.shape[0]
        top = xp.empty((rows, k), dtype=xp.int32)
        grid, threads, _ = launch_geometry("topk_select", rows)
        self._kernel("topk_select", scores.dtype)(
            grid, threads, (scores, np.int64(scores.shape[1]), np.int32(k), top)
        )
        # topk_select returns the right k ids per row in no useful order: sort them by
        # (row, -score, id); every key is exact in float64 (ids < 2**31, scores float32/64)
        top_scores = xp.take_along_axis(scores, top, axis=1)
        keys = xp.stack(
            [
                top.ravel().astype(xp.float64),
                -top_scores.ravel().astype(xp.float64),
                (xp.arange(rows * k, dtype=xp.int64) // k).astype(xp.float64),
            ]
        )
        order = xp.lexsort(keys)
        ids = top.ravel()[order].reshape(rows, k)
        best = top_scores.ravel()[order].reshape(rows, k)
        ids[best == -xp.inf] = -1
        return ids, best


def _gib(count):
    return f"{count / 2**30:.2f} GiB"
