"""The CPU backend: Numba kernels (``backends.numba_kernels``) behind the backend interface.

The wrappers here check shapes and dtypes and normalise index dtypes (int64 ``indptr``,
int32 ``indices``) so each kernel compiles once per factor dtype; the caller has already
checked that every index is in range, and the kernels trust it (indices are never narrowed
to int32 without a check). Memory moves and the norms are NumPy array code shared with the
other backends (``backends.xp_generic.ArrayAlgebra``); the Gram matrix is a kernel too
(``kernels.gram``: blocks of rows, one single-threaded BLAS product each).

The kernels run on one persistent thread pool per process (``backends.task_pool``), each
launch on the backend's ``num_threads``; BLAS is held at one thread around every launch (and
through ``threads()``), because its idle threads spin on the cores the pool needs. Queries
may come from many threads at once: their launches share the pool, and the process-wide
BLAS limit is shared and restored by the last thread out. Where no folder can hold Numba's
cache, the kernels compile uncached (one warning, ``backends.numba_kernels``).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
from pathlib import Path

import numpy as np
import scipy.sparse
from threadpoolctl import ThreadpoolController

from . import numba_kernels as kernels
from .base import LossParts, as_int32, check_int32_ids, check_solve_operands
from .task_pool import machine_threads
from .xp_generic import ArrayAlgebra

__all__ = ["NumbaBackend"]

_controller = None


class _SharedBlasLimit:
    """BLAS threads while any thread holds a limit: the fewest asked for, restored exactly.

    threadpoolctl's limits are process-wide: two threads each entering and leaving their own
    ``limit`` would restore in the wrong order and could leave BLAS pinned. Here the holders
    are counted by the limit they ask for, the smallest one applies, and the last one out
    restores what the first found.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = collections.Counter()
        self._original = None  # each BLAS library's thread count before the first holder
        self._applied = None

    @contextlib.contextmanager
    def __call__(self, threads):
        with self._lock:
            self._holders[threads] += 1
            self._apply()
        try:
            yield
        finally:
            with self._lock:
                self._holders[threads] -= 1
                if not self._holders[threads]:
                    del self._holders[threads]
                self._apply()

    def _apply(self):
        # the libraries' own setters: a threadpoolctl limiter re-reads every library's
        # state, tens of microseconds that each query would pay twice
        libraries = _blas_libraries()
        if self._original is None:
            self._original = [library.num_threads for library in libraries]
        wanted = min(self._holders) if self._holders else None
        if wanted == self._applied:
            return
        for library, original in zip(libraries, self._original, strict=True):
            library.set_num_threads(original if wanted is None else wanted)
        self._applied = wanted
        if wanted is None:
            self._original = None


_blas_threads = _SharedBlasLimit()


@functools.cache
def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries (see ``_blas_controller``)."""
    return tuple(_blas_controller().select(user_api="blas").lib_controllers)


def _blas_controller():
    """One threadpoolctl controller that sees every BLAS the kernels can reach.

    The kernels call SciPy's BLAS (``backends.numba_blas``), a different library from
    NumPy's: it is loaded before the controller is built, or its thread pool would escape
    the limits.
    """
    global _controller
    if _controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)

        _controller = ThreadpoolController()
    return _controller


class NumbaBackend(ArrayAlgebra):
    """CPU backend: Numba kernels for the Gram matrix, solve, loss and top-k.

    Parameters
    ----------
    num_threads : int
        Threads for the kernels and for BLAS; 0 uses every core Numba may use
        (``backends.task_pool.machine_threads``).
    """

    name = "cpu"
    dtypes = (np.dtype(np.float32), np.dtype(np.float64))

    def __init__(self, num_threads=0):
        super().__init__(num_threads=num_threads, xp=np, sparse=scipy.sparse)

    def threads(self):
        # BLAS stays at one thread: the kernels, the Gram matrix among them, split their
        # products among the pool's threads, and idle BLAS threads would spin on the cores
        return self._kernels()

    @staticmethod
    def _kernels():
        """BLAS at one thread while kernels run: each of their products is one task's."""
        return _blas_threads(1)

    def gram(self, Y, regularization):
        if Y.dtype not in self.dtypes or not Y.flags.c_contiguous or Y.ndim != 2:
            return super().gram(Y, regularization)
        # the rows' blocks follow the machine, not num_threads: the result does not depend on it
        chunks = min(machine_threads(), max(1, Y.shape[0] // GRAM_ROWS))
        with self._kernels():
            YtY = kernels.gram(Y, chunks, self._thread_count())
        YtY[np.diag_indices_from(YtY)] += Y.dtype.type(regularization)
        return YtY

    def _thread_count(self):
        maximum = machine_threads()
        return min(self.num_threads or maximum, maximum)

    def solve(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        indptr, indices, data = _kernel_operands(Cui, X, Y, YtY)
        row_regularization = _row_lambdas(row_regularization, X)
        with self._kernels():
            self._solve(indptr, indices, data, X, Y, YtY, cg_steps, row_regularization)

    def _solve(self, indptr, indices, data, X, Y, YtY, cg_steps, row_regularization):
        zero, one = X.dtype.type(0), X.dtype.type(1)
        if cg_steps is None:
            kernels.exact_solve(
                indptr, indices, data, X, Y, YtY, zero, one, row_regularization,
                self._thread_count(),
            )  # fmt: skip
        else:
            # the machine's thread count, not this backend's: tasks, and so the results, do
            # not depend on num_threads
            limits = task_limits(X.shape[0], X.shape[1], X.dtype.itemsize, machine_threads())
            bounds = kernels.task_bounds(indptr, *limits)
            prefetch = prefetch_rows(Y.shape[0], Y.shape[1] * Y.itemsize)
            kernels.cg_solve(
                indptr, indices, data, X, Y, YtY, int(cg_steps), bounds, zero, one,
                row_regularization, prefetch, self._thread_count(),
            )

    def solve_subspace(self, Cui, X, Y, YtY, block_size, sweeps=1, row_regularization=None):
        indptr, indices, data = _kernel_operands(Cui, X, Y, YtY)
        block_size = max(1, min(int(block_size), X.shape[1]))
        zero, one = X.dtype.type(0), X.dtype.type(1)
        row_regularization = _row_lambdas(row_regularization, X)
        with self._kernels():
            kernels.subspace_solve(
                indptr, indices, data, X, Y, YtY, block_size, int(sweeps), zero, one,
                row_regularization, self._thread_count(),
            )

    def loss_parts(self, Cui, X, Y):
        YtY = self.gram(Y, 0.0)
        indptr, indices, data = _kernel_operands(Cui, X, Y, YtY)
        with self._kernels():
            observed, gramian, stored_squares, confidence = kernels.loss_parts(
                indptr, indices, data, X, Y, YtY, X.dtype.type(0), X.dtype.type(1),
                self._thread_count(),
            )
        n_rows, n_columns = Cui.shape
        missing = n_rows * n_columns - Cui.nnz
        return LossParts(observed, gramian - stored_squares, confidence, missing)

    def topk(self, queries, factors, k, exclude=None, exclude_all=None, norms=None):
        n_queries, n_items = len(queries), len(factors)
        check_int32_ids(n_items, "factors")
        excluded_for_all = np.zeros(n_items, dtype=np.bool_)
        if exclude_all is not None:
            excluded_for_all[exclude_all] = True
        if exclude is None:
            excl_indptr = np.zeros(n_queries + 1, dtype=np.int64)
            excl_indices = np.zeros(0, dtype=np.int32)
        else:
            if not exclude.has_sorted_indices:
                exclude = exclude.sorted_indices()
            excl_indptr = exclude.indptr.astype(np.int64)
            excl_indices = as_int32(exclude.indices, "exclude.indices", exclude.shape[1])
        ids = np.empty((n_queries, k), dtype=np.int32)
        scores = np.empty((n_queries, k), dtype=factors.dtype)
        factors = np.ascontiguousarray(factors)
        queries = np.ascontiguousarray(queries, dtype=factors.dtype)
        norms = np.zeros(0, factors.dtype) if norms is None else norms.astype(factors.dtype)
        threads = self._thread_count()
        tiles = topk_tiles(n_queries, factors.shape[1], factors.itemsize, threads)
        operands = (queries, factors, norms, excl_indptr, excl_indices, excluded_for_all)
        with self._kernels():
            kernels.fused_topk(*operands, *tiles, ids, scores, threads)
        return ids, scores


#: the fewest rows of a block of the Gram matrix (see NumbaBackend.gram)
GRAM_ROWS = 256


#: the most queries one top-k task scores together
TOPK_QUERY_TILE = 512


def topk_tiles(n_queries, factors, itemsize, threads, cache=None):
    """(queries, items) of one tile of the fused top-k, from the cache size and thread count.

    Each BLAS call repacks its operands, so the product of a tile runs faster the more
    queries share it: measured on a 2 MiB L2 at 32-512 factors (docs/benchmarks.md,
    "Constants chosen by measurement"), tiles of 500 queries scored up to twice as fast as
    tiles of 64. The queries are therefore shared evenly among the threads, in as few tasks as
    ``TOPK_QUERY_TILE`` (the most queries of one task) allows. The item tile keeps the
    scratch scores in half of one core's L2 cache (``cache`` bytes) and the tile's factor
    rows in a quarter, so the selection reads the scores from the cache right after BLAS
    wrote them; it is a multiple of the selection's segment when it can be.
    """
    cache = cache_bytes() if cache is None else cache
    threads = max(1, threads)
    # as few tasks as the cap allows, the same number for every thread, of equal size
    tasks_per_thread = max(1, -(-n_queries // (TOPK_QUERY_TILE * threads)))
    query_tile = max(1, -(-n_queries // (tasks_per_thread * threads)))
    item_tile = min(cache // 2 // (query_tile * itemsize), cache // 4 // (factors * itemsize))
    if item_tile >= kernels.SELECT_SEGMENT:
        item_tile -= item_tile % kernels.SELECT_SEGMENT
    return query_tile, max(16, item_tile)


#: the most rows one CG task steps in lockstep
MAX_CG_TASK_ROWS = 32

#: tasks per thread at least, so that dynamic scheduling can even out the threads' loads
TASKS_PER_THREAD = 4

#: a task's product with YtY has at least (factors / DENSE_FACTORS)^2 rows (see task_limits)
DENSE_FACTORS = 64

#: ... and at least DENSE_ROWS rows where YtY takes 1 / GRAM_SHARE of the cache or more
DENSE_ROWS = 128
GRAM_SHARE = 8

#: ... unless the rows hold DENSE_ENTRIES x factors stored entries before that
DENSE_ENTRIES = 32


@functools.cache
def cache_bytes():
    """The size of one core's L2 cache in bytes (1 MiB when the system does not say)."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index2/size")
    try:
        text = path.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return 1 << 20


#: Y's rows are prefetched when Y is larger than this many L2 caches (see prefetch_rows)
PREFETCH_CACHES = 4

#: ... and its rows are at least this many bytes
PREFETCH_ROW_BYTES = 256


def prefetch_rows(n_rows, row_bytes, cache=None):
    """Whether the CG solve fetches the rows of Y (n_rows of row_bytes) ahead of their use.

    Measured on one thread (kernel_ab, a 2 MiB L2): prefetching made the solve 13-16% faster
    where Y was 9-26 MB with rows of 256-512 bytes (lastfm-2k at 128 factors, synthetic 10M
    at 64), and 7-17% slower where Y was within 3 L2 caches or its rows were 128 bytes (32
    factors): there the fetches cost more than the waits they hide.
    """
    cache = cache_bytes() if cache is None else cache
    return n_rows * row_bytes > PREFETCH_CACHES * cache and row_bytes >= PREFETCH_ROW_BYTES


def task_limits(n_rows, factors, itemsize, threads, cache=None):
    """(min rows, max rows, max stored entries, dense entries) of one CG task, for
    ``task_bounds``, from the factors, the cache and the threads.

    - The sparse part: a task's CG steps re-read the factor rows its entries gather, once
      per step; they stay in one core's L2 cache (``cache`` bytes) beside YtY while the
      task's entries x factors fit what YtY leaves of it (a quarter of the cache at least).
    - The dense part: YtY times a task's search directions is one BLAS product, which
      repacks YtY (factors^2 elements) on every call, while the cache limit gives a task
      rows in proportion to 1 / factors: at large factor counts the repacking, not the
      product, would take the time. A task takes at least (factors / 64)^2 rows even past
      the cache limit, and at least 128 where YtY is an eighth of the cache or more: there
      each step's sparse pass evicts YtY, and every product reads it again from memory.
      Measured (docs/benchmarks.md, "Constants chosen by measurement"): 128 rows against 16
      at 256 factors took 0.67-0.92 of the solve's time on ml-1m, lastfm-2k and synthetic 10M, and
      against 64 at 512 factors 0.85-1.0.
    - Rows with many entries stop a task sooner: past ``factors x 32`` entries the sparse
      part outweighs the dense product's overheads, and longer tasks measured slower on
      synthetic 10M's items (rows of 500 entries on average).
    - At most ``MAX_CG_TASK_ROWS`` rows (more at large factor counts, to honour the minimum),
      and no fewer than ``TASKS_PER_THREAD`` tasks per thread when the rows allow it.
    """
    cache = cache_bytes() if cache is None else cache
    gram_bytes = factors * factors * itemsize
    room = max(cache - gram_bytes, cache // 4)
    max_entries = max(1, room // (factors * itemsize))
    min_rows = max(1, (factors // DENSE_FACTORS) ** 2)
    if gram_bytes * GRAM_SHARE >= cache:
        min_rows = max(min_rows, DENSE_ROWS)
    max_rows = max(MAX_CG_TASK_ROWS, min_rows)
    spread = max(1, n_rows // max(1, TASKS_PER_THREAD * threads))
    return min(min_rows, spread), min(max_rows, spread), max_entries, DENSE_ENTRIES * factors


def _row_lambdas(row_regularization, X):
    """The per-row lambdas as the kernels take them: an empty vector for none."""
    if row_regularization is None:
        return np.zeros(0, X.dtype)
    if row_regularization.shape != (X.shape[0],):
        raise ValueError(
            f"row_regularization has shape {row_regularization.shape}, expected ({X.shape[0]},)"
        )
    return np.ascontiguousarray(row_regularization, dtype=X.dtype)


def _kernel_operands(Cui, X, Y, YtY):
    """Check what the kernels assume and return (int64 indptr, int32 indices, data)."""
    check_solve_operands(Cui, X, Y, YtY, NumbaBackend.dtypes)
    if YtY.dtype != X.dtype:
        raise TypeError(f"YtY is {YtY.dtype} but the factors are {X.dtype}")
    if not X.flags.writeable:
        raise ValueError("X must be writeable: it is updated in place")
    return (
        Cui.indptr.astype(np.int64, copy=False),
        as_int32(Cui.indices, "Cui.indices", Cui.shape[1]),
        Cui.data.astype(X.dtype, copy=False),
    )
