"""Numba kernels of the CPU backend: the solve, the loss and top-k selection.

The kernels follow ``backends.xp_generic`` step for step (same names, same stopping
threshold) but work one row at a time, in tasks of rows with scratch vectors allocated once
per task. Each public function here but ``task_bounds`` and ``gram`` (NumPy) launches
its ``@njit(nogil=True)`` task-range kernel on the process's thread pool
(``backends.task_pool``); dense products call BLAS directly (``backends.numba_blas``;
Numba's ``np.dot`` costs seconds of compiling), and array copies are loops (array
assignment compiles its broadcasting checks, slowly). Arithmetic is in the factor dtype, as
in implicit, with reassociation allowed so that LLVM vectorises the dot products. Every row
is computed by one call from the same inputs, so results do not depend on the thread count.

Compiling is most of a cold first fit and query, so the kernels are shaped to compile
little: each task loop holds its task's body (a separate function would be optimised
again when linked into its caller), the hot sparse loop is one function called from two
places (inlined twice it cost 1.7 s more to compile; it runs 1-3% slower at 32-64 factors,
no slower at 128-512), and helpers take one signature each (no literal flags).

The kernels trust their inputs: ``backends.numba_cpu`` checks shapes and dtypes and
normalises index dtypes (int64 ``indptr``, int32 ``indices``) so each kernel compiles once
per factor dtype, and the caller has checked that every index is in range.
"""

from __future__ import annotations

import warnings

import numpy as np
from numba import njit

from .base import CG_TOLERANCE
from .numba_blas import gemm, gemv
from .numba_prefetch import prefetch_row
from .task_pool import run

__all__ = [
    "cg_solve",
    "exact_solve",
    "fused_topk",
    "gram",
    "loss_parts",
    "subspace_solve",
    "task_bounds",
]

_cache = True


def _kernel(**options):
    """``njit(cache=True, **options)``; uncached, with one warning, where nothing can cache.

    Numba caches beside the source file or in ``NUMBA_CACHE_DIR`` / the user's cache folder
    and refuses ``cache=True`` outright when none is writable (a read-only install without
    a writable HOME): the kernels then compile in every process instead of failing to import.
    """

    options = {"error_model": ERROR_MODEL, **options}

    def decorate(function):
        global _cache
        if _cache:
            try:
                return njit(cache=True, **options)(function)
            except RuntimeError as exc:
                if "cannot cache" not in str(exc):
                    raise
                _cache = False
                warnings.warn(
                    "the cpu backend runs uncached (its kernels compile in every process): "
                    f"Numba found no writable cache folder ({exc}); set NUMBA_CACHE_DIR to one",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return njit(**options)(function)

    return decorate


#: IEEE division: x / 0 gives inf or NaN, which the fit's finiteness check reports with
#: its advice, instead of Python's ZeroDivisionError out of a kernel (an exactly zero
#: Cholesky pivot, where weights overflow float32)
ERROR_MODEL = "numpy"

#: rows solved by one task of the exact solve, the subspace solve and the loss
FIXED_TASK_ROWS = 32

# reassociation lets LLVM vectorise reductions; no-NaN/no-inf assumptions stay off so the
# fit's finiteness guard keeps working
FASTMATH = {"reassoc", "contract"}


@njit(inline="always", fastmath=FASTMATH)
def _dot(a, b, zero):
    total = zero
    for j in range(a.shape[0]):
        total += a[j] * b[j]
    return total


@njit(inline="always", fastmath=FASTMATH)
def _symv(A, v, out, zero):
    """out = A v for a symmetric A (row-major access)."""
    for a in range(A.shape[0]):
        out[a] = _dot(A[a], v, zero)


@njit(inline="always", fastmath=FASTMATH)
def _entry_weight(confidence, projection, sign, b_scale, zero, one):
    """sign (c - 1) (y . v), plus b_scale c when the entry is liked (c > 0): with b_scale 1
    that is the entry's part of r = b - A x, with 0 its part of A p."""
    return sign * (abs(confidence) - one) * projection + b_scale * max(confidence, zero)


#: entries _add_projections takes together, and how far ahead it prefetches their factor rows
GROUP = 8


@njit(fastmath=FASTMATH)
def _add_projections(indices, data, start, stop, Y, v, out, sign, b_scale, zero, one, prefetch):
    """out += sum_i w_i y_i over the entries start..stop of a row, w_i from _entry_weight.

    Entries are taken ``GROUP`` (8) at a time: v is read once for eight dot products, whose
    eight sums are independent chains that keep both FMA units busy (with four, the chains'
    latency bound the loop), and out is updated once for eight entries. The factor rows of
    the next eight entries (of this row or the next ones) are prefetched meanwhile when
    ``prefetch`` says so, which hides most of the wait for rows outside the L2 cache (where
    Y fits in it, the fetches measured only as overhead: 17% at 32 factors on ml-1m).
    """
    factors = out.shape[0]
    n_stored = indices.shape[0]
    index = start
    while index + GROUP <= stop:
        if prefetch:
            for ahead in range(index + GROUP, min(index + 2 * GROUP, n_stored)):
                prefetch_row(Y, indices[ahead])
        y0, y1 = Y[indices[index]], Y[indices[index + 1]]
        y2, y3 = Y[indices[index + 2]], Y[indices[index + 3]]
        y4, y5 = Y[indices[index + 4]], Y[indices[index + 5]]
        y6, y7 = Y[indices[index + 6]], Y[indices[index + 7]]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
        for j in range(factors):
            vj = v[j]
            s0 += y0[j] * vj
            s1 += y1[j] * vj
            s2 += y2[j] * vj
            s3 += y3[j] * vj
            s4 += y4[j] * vj
            s5 += y5[j] * vj
            s6 += y6[j] * vj
            s7 += y7[j] * vj
        w0 = _entry_weight(data[index], s0, sign, b_scale, zero, one)
        w1 = _entry_weight(data[index + 1], s1, sign, b_scale, zero, one)
        w2 = _entry_weight(data[index + 2], s2, sign, b_scale, zero, one)
        w3 = _entry_weight(data[index + 3], s3, sign, b_scale, zero, one)
        w4 = _entry_weight(data[index + 4], s4, sign, b_scale, zero, one)
        w5 = _entry_weight(data[index + 5], s5, sign, b_scale, zero, one)
        w6 = _entry_weight(data[index + 6], s6, sign, b_scale, zero, one)
        w7 = _entry_weight(data[index + 7], s7, sign, b_scale, zero, one)
        for j in range(factors):
            out[j] += (w0 * y0[j] + w1 * y1[j] + w2 * y2[j] + w3 * y3[j]) + (
                w4 * y4[j] + w5 * y5[j] + w6 * y6[j] + w7 * y7[j]
            )
        index += GROUP
    for rest in range(index, stop):
        y = Y[indices[rest]]
        weight = _entry_weight(data[rest], _dot(y, v, zero), sign, b_scale, zero, one)
        for j in range(factors):
            out[j] += weight * y[j]


def task_bounds(indptr, min_rows, max_rows, max_entries, dense_entries):
    """Split the rows into tasks of at most ``max_rows`` rows: a task takes rows while it
    holds fewer than ``min_rows`` rows and fewer than ``dense_entries`` stored entries, or
    while its entries stay within ``max_entries``.

    Rows of power-law data differ in cost by orders of magnitude; tasks sized by their
    entries keep the threads evenly loaded and the factor rows a task gathers in the cache
    across its CG steps, and enough rows keep the dense product with YtY one efficient
    matrix product, unless the rows are long enough for the sparse part to outweigh it
    (``backends.numba_cpu.task_limits`` chooses the limits).

    NumPy, not a kernel (compiling one cost half a second of a cold first fit): where a
    task starting at each row would end is a few ``searchsorted`` calls, and the tasks are
    the chain of those ends from row 0, walked one step per task. On a million power-law
    rows this takes about 40 ms, against seconds for the solve it plans.
    """
    n_rows = indptr.shape[0] - 1
    starts = np.arange(n_rows)
    # each rule alone stops where it first fails; the task ends where both have failed
    within = np.searchsorted(indptr, indptr[:-1] + max_entries, side="right") - 1
    dense = np.searchsorted(indptr, indptr[:-1] + dense_entries, side="left")
    ends = np.maximum(within, np.minimum(starts + min_rows, dense))
    np.maximum(ends, starts + 1, out=ends)
    np.minimum(ends, starts + max_rows, out=ends)
    np.minimum(ends, n_rows, out=ends)
    bounds = [0]
    while bounds[-1] < n_rows:
        bounds.append(int(ends[bounds[-1]]))
    return np.array(bounds, dtype=np.int64)


def cg_solve(
    indptr, indices, data, X, Y, YtY, cg_steps, bounds, zero, one, row_regularization,
    prefetch, threads=0,
):  # fmt: skip
    """``cg_steps`` CG steps for every row of X, in the tasks ``bounds`` (see task_bounds),
    on ``threads`` threads (0: all); ``row_regularization`` (empty for none) adds lambda_u I;
    ``prefetch``: fetch Y's rows ahead (see _add_projections).
    """
    run(
        _cg_tasks, bounds.shape[0] - 1, threads,
        indptr, indices, data, X, Y, YtY, cg_steps, bounds, zero, one, row_regularization,
        bool(prefetch),
    )  # fmt: skip


@_kernel(nogil=True, fastmath=FASTMATH)
def _cg_tasks(
    start, stop, indptr, indices, data, X, Y, YtY, cg_steps, bounds, zero, one,
    row_regularization, prefetch,
):  # fmt: skip
    """The CG steps of the tasks start..stop, each task's rows in lockstep."""
    for task in range(start, stop):
        first, last = bounds[task], bounds[task + 1]
        factors = X.shape[1]
        per_row = row_regularization.shape[0] > 0
        rows = last - first
        # the rows of a task step in lockstep so that YtY times their search directions is
        # one matrix product; each row still follows its own CG iteration exactly. The task's
        # rows of X are updated in place: no other task reads them.
        x_block = X[first:last]
        R = np.empty((rows, factors), X.dtype)
        P = np.empty((rows, factors), X.dtype)
        AP = np.empty((rows, factors), X.dtype)
        rsold = np.empty(rows, X.dtype)
        active = np.zeros(rows, np.bool_)
        n_active = 0  # a count, not active.any(): one fewer NumPy function to compile
        # r = b - A x, with A x = YtY x + sum_i (c_ui - 1) (y_i . x) y_i   (YtY is symmetric)
        gemm(False, False, 1.0, x_block, YtY, 0.0, R)
        for b in range(rows):
            x, r = x_block[b], R[b]
            begin, end = indptr[first + b], indptr[first + b + 1]
            if begin == end:
                for j in range(factors):
                    x[j] = zero
                continue
            if per_row:
                for j in range(factors):
                    r[j] += row_regularization[first + b] * x[j]
            for j in range(factors):
                r[j] = -r[j]
            _add_projections(indices, data, begin, end, Y, x, r, -one, one, zero, one, prefetch)
            p = P[b]
            for j in range(factors):
                p[j] = r[j]
            rsold[b] = _dot(r, r, zero)
            active[b] = rsold[b] >= CG_TOLERANCE
            n_active += active[b]
        for _ in range(cg_steps):
            if n_active == 0:
                break
            gemm(False, False, 1.0, P, YtY, 0.0, AP)
            for b in range(rows):
                if not active[b]:
                    continue
                x, r, p, Ap = x_block[b], R[b], P[b], AP[b]
                begin, end = indptr[first + b], indptr[first + b + 1]
                if per_row:
                    for j in range(factors):
                        Ap[j] += row_regularization[first + b] * p[j]
                _add_projections(
                    indices, data, begin, end, Y, p, Ap, one, zero, zero, one, prefetch
                )
                alpha = rsold[b] / _dot(p, Ap, zero)
                for j in range(factors):
                    x[j] += alpha * p[j]
                    r[j] -= alpha * Ap[j]
                rsnew = _dot(r, r, zero)
                if rsnew < CG_TOLERANCE:
                    active[b] = False
                    n_active -= 1
                    continue
                beta = rsnew / rsold[b]
                for j in range(factors):
                    p[j] = r[j] + beta * p[j]
                rsold[b] = rsnew


def gram(Y, chunks, threads=0):
    """Y^T Y as the sum of ``chunks`` blocks of rows' products, the blocks on ``threads``
    threads (0: all), each one single-threaded BLAS call, added in block order (so the
    result depends on ``chunks``, never on ``threads``) and made exactly symmetric.

    BLAS's own threads would do the product as fast, but they spin for a while after it
    and take the cores from the kernels that follow (measured: 1.4x slower fits at 256
    factors on two cores). Each block is NumPy's ``rows.T @ rows``, which NumPy runs as
    BLAS ``syrk`` (one triangle, half the multiply-adds of ``gemm``; measured 0.48-0.67x
    the time of a ``gemm`` per block at 128-512 factors), with the GIL released, so the
    pool's threads overlap without a compiled kernel.
    """
    n_rows, factors = Y.shape
    chunks = max(1, min(int(chunks), n_rows))
    bounds = (np.arange(chunks + 1, dtype=np.int64) * n_rows) // chunks
    partials = np.empty((chunks, factors, factors), Y.dtype)
    run(_gram_tasks, chunks, threads, Y, bounds, partials)
    total = partials[0]
    for chunk in range(1, chunks):
        total += partials[chunk]
    return (total + total.T) * Y.dtype.type(0.5)


def _gram_tasks(start, stop, Y, bounds, partials):
    for chunk in range(start, stop):
        rows = Y[bounds[chunk] : bounds[chunk + 1]]
        np.matmul(rows.T, rows, out=partials[chunk])


def exact_solve(indptr, indices, data, X, Y, YtY, zero, one, row_regularization, threads=0):
    """Cholesky solve of every row on ``threads`` threads (0: all); ``row_regularization``
    (empty for none) adds lambda_u I."""
    run(
        _exact_tasks, _task_count(X.shape[0]), threads,
        indptr, indices, data, X, Y, YtY, zero, one, row_regularization,
    )  # fmt: skip


def _task_count(n_rows):
    """Tasks of ``FIXED_TASK_ROWS`` rows (the last one shorter) for n_rows rows."""
    return (n_rows + FIXED_TASK_ROWS - 1) // FIXED_TASK_ROWS


@_kernel(nogil=True, fastmath=FASTMATH)
def _exact_tasks(start, stop, indptr, indices, data, X, Y, YtY, zero, one, row_regularization):
    n_rows, factors = X.shape
    per_row = row_regularization.shape[0] > 0
    for task in range(start, stop):
        A = np.empty((factors, factors), X.dtype)
        b = np.empty(factors, X.dtype)
        for u in range(task * FIXED_TASK_ROWS, min((task + 1) * FIXED_TASK_ROWS, n_rows)):
            x = X[u]
            start, stop = indptr[u], indptr[u + 1]
            if start == stop:
                x[:] = zero
                continue
            for a in range(factors):
                for j in range(factors):
                    A[a, j] = YtY[a, j]
            if per_row:
                for j in range(factors):
                    A[j, j] += row_regularization[u]
            b[:] = zero
            for index in range(start, stop):
                i = indices[index]
                confidence = data[index]
                if confidence > zero:
                    for j in range(factors):
                        b[j] += confidence * Y[i, j]
                weight = abs(confidence) - one
                for a in range(factors):
                    scaled = weight * Y[i, a]
                    for j in range(factors):
                        A[a, j] += scaled * Y[i, j]
            _cholesky_solve(A, b, zero)
            for j in range(factors):
                x[j] = b[j]


def subspace_solve(
    indptr, indices, data, X, Y, YtY, block_size, sweeps, zero, one, row_regularization,
    threads=0,
):  # fmt: skip
    """iALS++ sweeps for every row of X on ``threads`` threads (0: all):
    ``backends.xp_generic``'s ``_solve_subspace``, a row at a time (``_subspace_row``);
    ``row_regularization`` (empty for none) adds lambda_u I."""
    run(
        _subspace_tasks, _task_count(X.shape[0]), threads,
        indptr, indices, data, X, Y, YtY, block_size, sweeps, zero, one, row_regularization,
    )  # fmt: skip


@_kernel(nogil=True)
def _subspace_tasks(
    start, stop, indptr, indices, data, X, Y, YtY, block_size, sweeps, zero, one,
    row_regularization,
):  # fmt: skip
    n_rows = X.shape[0]
    per_row = row_regularization.shape[0] > 0
    for task in range(start, stop):
        for u in range(task * FIXED_TASK_ROWS, min((task + 1) * FIXED_TASK_ROWS, n_rows)):
            lambda_u = row_regularization[u] if per_row else zero
            _subspace_row(
                indptr, indices, data, X, Y, YtY, u, block_size, sweeps, zero, one, lambda_u
            )


@njit(fastmath=FASTMATH, error_model=ERROR_MODEL)
def _subspace_row(indptr, indices, data, X, Y, YtY, u, block_size, sweeps, zero, one, lambda_u):
    """iALS++ sweeps for row u, whose system has ``lambda_u I`` added. Per block the row's
    entries' factor columns of the block are gathered into G once, so the block's system is
    two small single-threaded BLAS products:
    A_BB = YtY_BB + G^T diag(c - 1) G + lambda_u I and r_B = G^T t - (YtY x)_B - lambda_u x_B."""
    factors = X.shape[1]
    x = X[u]
    start, stop = indptr[u], indptr[u + 1]
    n = stop - start
    if n == 0:
        x[:] = zero
        return
    predictions = np.empty(n, X.dtype)
    weights = np.empty(n, X.dtype)
    liked = np.empty(n, X.dtype)
    for e in range(n):
        confidence = data[start + e]
        predictions[e] = _dot(Y[indices[start + e]], x, zero)
        weights[e] = abs(confidence) - one
        liked[e] = confidence if confidence > zero else zero
    targets = np.empty(n, X.dtype)
    for _ in range(sweeps):
        for low in range(0, factors, block_size):
            high = min(low + block_size, factors)
            size = high - low
            G = np.empty((n, size), X.dtype)
            weighted = np.empty((n, size), X.dtype)
            for e in range(n):
                y = Y[indices[start + e]]
                for a in range(size):
                    G[e, a] = y[low + a]
                    weighted[e, a] = weights[e] * y[low + a]
                targets[e] = liked[e] - weights[e] * predictions[e]
            A = np.empty((size, size), X.dtype)
            gemm(True, False, one, weighted, G, zero, A)
            for a in range(size):
                for j in range(size):
                    A[a, j] += YtY[low + a, low + j]
            r = np.empty(size, X.dtype)
            gemv(True, one, G, targets, zero, r)
            gemv(False, -one, YtY[low:high], x, one, r)
            if lambda_u != zero:
                for a in range(size):
                    A[a, a] += lambda_u
                    r[a] -= lambda_u * x[low + a]
            _cholesky_solve(A, r, zero)
            for a in range(size):
                x[low + a] += r[a]
            gemv(False, one, G, r, one, predictions)


@njit(inline="always", fastmath=FASTMATH)
def _cholesky_solve(A, b, zero):
    """Solve A x = b in place (x overwrites b) for a symmetric positive definite A, of which
    only the lower triangle (diagonal included) is read."""
    n = A.shape[0]
    # A = L L^T, L stored in the lower triangle of A
    for j in range(n):
        diagonal = A[j, j] - _dot(A[j, :j], A[j, :j], zero)
        A[j, j] = np.sqrt(diagonal)
        for i in range(j + 1, n):
            A[i, j] = (A[i, j] - _dot(A[i, :j], A[j, :j], zero)) / A[j, j]
    for i in range(n):
        b[i] = (b[i] - _dot(A[i, :i], b[:i], zero)) / A[i, i]
    for i in range(n - 1, -1, -1):
        total = b[i]
        for j in range(i + 1, n):
            total -= A[j, i] * b[j]
        b[i] = total / A[i, i]


def loss_parts(indptr, indices, data, X, Y, YtY, zero, one, threads=0):
    """Return the float64 sums (observed, gramian, stored squares, confidence) of the rows.

    ``observed`` is ``sum c (1 + s^2 - 2 p s)`` over the stored entries (implicit adds c, not
    c p^2, for every stored entry), ``gramian`` is ``sum_u x_u^T YtY x_u`` (every cell's
    ``s^2`` as if it were missing), ``stored squares`` the stored entries' ``s^2``. Each task
    sums its own rows and the tasks' sums are added in order: the result does not depend on
    ``threads`` (0: all).
    """
    n_tasks = _task_count(X.shape[0])
    parts = np.zeros((n_tasks, 4), np.float64)
    run(_loss_tasks, n_tasks, threads, indptr, indices, data, X, Y, YtY, zero, one, parts)
    observed, gramian, stored_squares, total_confidence = parts.sum(axis=0)
    return float(observed), float(gramian), float(stored_squares), float(total_confidence)


@_kernel(nogil=True, fastmath=FASTMATH)
def _loss_tasks(start, stop, indptr, indices, data, X, Y, YtY, zero, one, parts):
    n_rows, factors = X.shape
    for task in range(start, stop):
        r = np.empty(factors, X.dtype)
        task_observed = task_gramian = task_squares = task_confidence = 0.0
        for u in range(task * FIXED_TASK_ROWS, min((task + 1) * FIXED_TASK_ROWS, n_rows)):
            x = X[u]
            _symv(YtY, x, r, zero)
            task_gramian += _dot(r, x, zero)
            for index in range(indptr[u], indptr[u + 1]):
                confidence = data[index]
                liked = confidence > zero
                confidence = abs(confidence)
                score = _dot(Y[indices[index]], x, zero)
                term = one + score * score
                if liked:
                    term -= 2 * score
                task_observed += confidence * term
                task_squares += score * score
                task_confidence += confidence
        parts[task, 0] = task_observed
        parts[task, 1] = task_gramian
        parts[task, 2] = task_squares
        parts[task, 3] = task_confidence


@njit(inline="always")
def _worse(score_a, id_a, score_b, id_b):
    """True when (score_a, id_a) ranks below (score_b, id_b): lower score, or tie and higher id."""
    return score_a < score_b or (score_a == score_b and id_a > id_b)


# The heap helpers move a hole instead of swapping pairs, and take ids as int32 (the heap's
# own type), so that each compiles once and small: compiling is most of a cold first query.


@njit
def _sift_down(scores, ids, score, item, position, size):
    """Put (score, item) at ``position`` of a heap of ``size`` entries (worst at the root)
    and sift it down to where it belongs."""
    while True:
        child = 2 * position + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _worse(scores[right], ids[right], scores[child], ids[child]):
            child = right
        if not _worse(scores[child], ids[child], score, item):
            break
        scores[position], ids[position] = scores[child], ids[child]
        position = child
    scores[position], ids[position] = score, item


@njit
def _push(scores, ids, size, score, item):
    """Offer (score, item) to a heap of the best so far (worst at the root); return its size."""
    if size < scores.shape[0]:
        # sift the new entry up from the end
        position = size
        while position > 0:
            parent = (position - 1) // 2
            if not _worse(score, item, scores[parent], ids[parent]):
                break
            scores[position], ids[position] = scores[parent], ids[parent]
            position = parent
        scores[position], ids[position] = score, item
        return size + 1
    if _worse(scores[0], ids[0], score, item):
        _sift_down(scores, ids, score, item, 0, size)
    return size


@njit
def _finish(scores, ids, size):
    """Sort a heap of ``size`` entries best first; pad the rest with (-inf, -1)."""
    filled = size
    # move the worst to the back until the heap is empty: the row ends up best first
    while size > 1:
        size -= 1
        score, item = scores[size], ids[size]
        scores[size], ids[size] = scores[0], ids[0]
        _sift_down(scores, ids, score, item, 0, size)
    for position in range(filled, scores.shape[0]):
        scores[position] = -np.inf
        ids[position] = -1


#: scores the selection tests against the bar together before it looks at any one of them
SELECT_SEGMENT = 64


@njit(inline="always")
def _offer_to_heap(values, start, excluded_for_all, lowest, heap_scores, heap_ids, size):
    """Offer a row of scores (of items ``start``..) to a running top-k heap; return its size.

    Once the heap is full, most scores fall below its worst (the bar): each segment of
    ``SELECT_SEGMENT`` scores is first counted against the bar in a branch-free loop, and
    only a segment with a score the one-at-a-time walk would not skip (at or above the bar,
    or NaN) is walked. ``lowest`` is -inf in the scores' dtype: a float64 bar would halve
    the vector width. The loops index with unsigned integers: with signed ones Numba checks
    each index for wraparound, and LLVM then gathers the scores one lane at a time instead
    of loading a vector.
    """
    k = heap_scores.shape[0]
    width = np.uint64(values.shape[0])
    segment = np.uint64(SELECT_SEGMENT)
    # the bar a score must clear once the heap is full (its worst, at the root)
    bar = heap_scores[0] if size == k else lowest
    for low in range(np.uint64(0), width, segment):
        high = min(low + segment, width)
        if size == k:
            contenders = 0
            for column in range(low, high):
                contenders += not values[column] < bar
            if contenders == 0:
                continue
        for column in range(low, high):
            value = values[column]
            item = np.int32(start + np.int64(column))
            # ties at the bar fall through to _push, which settles them by id
            if value < bar or value == lowest or excluded_for_all[item]:
                continue
            size = _push(heap_scores, heap_ids, size, value, item)
            if size == k:
                bar = heap_scores[0]
    return size


def fused_topk(
    queries,
    factors,
    norms,
    excl_indptr,
    excl_indices,
    excluded_for_all,
    query_tile,
    item_tile,
    out_ids,
    out_scores,
    threads=0,
):
    """Each query's k best (score, id), best first: score and select tile by tile.

    A task takes ``query_tile`` queries and walks the items ``item_tile`` at a time: one
    single-threaded BLAS product scores the tile of items for its queries (divided by
    ``norms`` unless it is empty) into a scratch block that stays in the cache, and every
    query's running top-k heap takes what beats its worst. The full queries x items block
    is never built. ``excl_indices`` are sorted within each query's row (canonical CSR).
    The tasks run on ``threads`` threads (0: all).
    """
    n_queries = queries.shape[0]
    lowest = queries.dtype.type(-np.inf)
    run(
        _topk_tasks, (n_queries + query_tile - 1) // query_tile, threads,
        queries, factors, norms, excl_indptr, excl_indices, excluded_for_all, query_tile,
        item_tile, lowest, out_ids, out_scores,
    )  # fmt: skip


@_kernel(nogil=True)
def _topk_tasks(
    start, stop, queries, factors, norms, excl_indptr, excl_indices, excluded_for_all,
    query_tile, item_tile, lowest, out_ids, out_scores,
):  # fmt: skip
    """The top-k of the queries of tasks start..stop (see fused_topk); ``lowest`` is -inf
    in the scores' dtype."""
    n_queries, n_items = queries.shape[0], factors.shape[0]
    for task in range(start, stop):
        first = task * query_tile
        last = min(first + query_tile, n_queries)
        rows = last - first
        part = np.empty((rows, queries.shape[1]), queries.dtype)
        # element by element: array assignment compiles its broadcasting checks, slowly
        for row in range(rows):
            for j in range(queries.shape[1]):
                part[row, j] = queries[first + row, j]
        block = np.empty((rows, item_tile), queries.dtype)
        sizes = np.zeros(rows, np.int64)
        # each query's next exclusion not yet passed
        cursor = np.zeros(rows, np.int64)
        for row in range(rows):
            cursor[row] = excl_indptr[first + row]
        for begin in range(0, n_items, item_tile):
            end = min(begin + item_tile, n_items)
            width = end - begin
            if width < item_tile:
                # the last, narrower tile: a block of its own width
                block = np.empty((rows, width), queries.dtype)
            # the tile's factor rows are read in place (BLAS takes their row stride)
            gemm(False, True, 1.0, part, factors[begin:end], 0.0, block)
            for row in range(rows):
                values = block[row]
                if norms.shape[0]:
                    for column in range(width):
                        values[column] /= norms[begin + column]
                limit = excl_indptr[first + row + 1]
                while cursor[row] < limit and excl_indices[cursor[row]] < end:
                    values[excl_indices[cursor[row]] - begin] = -np.inf
                    cursor[row] += 1
                sizes[row] = _offer_to_heap(
                    values, begin, excluded_for_all, lowest, out_scores[first + row],
                    out_ids[first + row], sizes[row],
                )
        for row in range(rows):
            _finish(out_scores[first + row], out_ids[first + row], sizes[row])
