"""The chunked conjugate-gradient solve that the CUDA backend runs, and its NumPy emulation.

:func:`chunked_cg_solve` is the host side of the GPU solve: it owns the work arrays, the
order of the launches and the matrix products, and calls three kernels through ``kernels``:

``sparse(plan, Cui, Y, V, out, active, with_b, sign)``
    For every chunk (``backends.cuda_plan.plan_chunks``) of a row u with ``active[u] != 0``,
    with c = |Cui[u, i]|, p = [Cui[u, i] > 0]::

        out[u] += sum_{i in chunk} (with_b * c * p + sign * (c - 1) * (y_i . v_u)) y_i

    one warp per chunk; a row's only chunk adds its sum directly, several chunks of one row
    add theirs atomically (``kernels/cg_chunked.cu::cg_sparse``).
``init(x, r, p, xYtY, indptr, rsold, active, tolerance)``
    ``r -= xYtY`` (so r = b - A x), ``p = r``, ``rsold = r.r``; a row is active while
    ``rsold >= tolerance`` (so a NaN residual stops it); an empty row gets ``x = p = 0``
    (the next GEMM reads every row of ``p``) and is inactive.
``update(x, r, p, Ap, rsold, active, tolerance)``
    One CG step of every active row: alpha = rsold / p.Ap; x += alpha p; r -= alpha Ap;
    rsnew = r.r; the row stops (keeping this x) unless rsnew >= tolerance; else
    p = r + (rsnew / rsold) p and rsold = rsnew.

``Y^T Y`` times the search directions of all rows is one matrix product per CG step
(cuBLAS on the GPU); a per-row lambda adds ``lambda_u v_u`` to it, one element-wise product
of all rows (so the kernels never see it). :class:`EmulatedKernels` runs the three kernels'
arithmetic in NumPy with the same decomposition (a partial sum per chunk, then a
segmented sum into rows), so CI checks the plan and the host code against the reference
backend without a GPU.
"""

from __future__ import annotations

import numpy as np

from .cuda_plan import CHUNK_ENTRIES, plan_chunks

__all__ = ["chunked_cg_solve", "EmulatedKernels"]


def chunked_cg_solve(
    xp,
    kernels,
    Cui,
    X,
    Y,
    YtY,
    cg_steps,
    tolerance,
    chunk_entries=None,
    row_regularization=None,
):
    """Update every row of ``X`` in place with ``cg_steps`` CG steps, kernel by kernel.

    ``X`` and ``Y`` are in their storage dtype (float16, float32 or float64); ``YtY`` is in
    the compute dtype, which is also that of every work array and of ``row_regularization``
    (None, or one lambda per row added to that row's diagonal). ``Cui`` is CSR with int32
    indices and float32 confidences. Rows are independent, so the result is the reference
    CG's (``backends.numpy_ref``) up to the order of summation.
    """
    compute = YtY.dtype
    plan = plan_chunks(xp, Cui.indptr, chunk_entries or CHUNK_ENTRIES)
    x = X if X.dtype == compute else X.astype(compute)
    r = xp.zeros_like(x)
    p = xp.empty_like(x)
    Ap = xp.empty_like(x)
    rsold = xp.empty(x.shape[0], dtype=compute)
    active = xp.ones(x.shape[0], dtype=xp.int32)  # every row takes part in r = b - A x
    _dense_product(xp, x, YtY, row_regularization, Ap)
    kernels.sparse(plan, Cui, Y, x, r, active, True, -1)
    kernels.init(x, r, p, Ap, Cui.indptr, rsold, active, tolerance)
    for _ in range(cg_steps):
        if not bool(active.any()):  # one small reduction and sync per step
            break
        _dense_product(xp, p, YtY, row_regularization, Ap)
        kernels.sparse(plan, Cui, Y, p, Ap, active, False, 1)
        kernels.update(x, r, p, Ap, rsold, active, tolerance)
    if x is not X:
        X[...] = x.astype(X.dtype)


def _dense_product(xp, V, YtY, row_regularization, out):
    """``out = V YtY`` (one GEMM), plus ``lambda_u v_u`` per row with a per-row lambda."""
    xp.matmul(V, YtY, out=out)
    if row_regularization is not None:
        out += row_regularization[:, None] * V


class EmulatedKernels:
    """The three CG kernels in NumPy, chunk by chunk as the GPU runs them."""

    def sparse(self, plan, Cui, Y, V, out, active, with_b, sign):
        chunk_row, chunk_begin, chunk_end = (np.asarray(a, dtype=np.int64) for a in plan)
        keep = active[chunk_row] != 0
        chunk_row, chunk_begin, chunk_end = chunk_row[keep], chunk_begin[keep], chunk_end[keep]
        if len(chunk_row) == 0:
            return
        lengths = chunk_end - chunk_begin
        # the entries of the chunks, in chunk order, and the row of each
        entries = np.repeat(chunk_begin - np.cumsum(lengths) + lengths, lengths)
        entries += np.arange(len(entries))
        rows = np.repeat(chunk_row, lengths)
        data = Cui.data[entries].astype(out.dtype)
        confidence = np.abs(data)
        y = Y[Cui.indices[entries]].astype(out.dtype)
        dots = np.sum(y * V[rows], axis=1)
        weights = sign * (confidence - 1) * dots
        if with_b:
            weights += np.where(data > 0, confidence, 0)
        # each warp's partial sum over its chunk, then the segmented sum into its row
        partial = np.add.reduceat(weights[:, None] * y, np.cumsum(lengths) - lengths, axis=0)
        np.add.at(out, chunk_row, partial.astype(out.dtype))

    def init(self, x, r, p, xYtY, indptr, rsold, active, tolerance):
        r -= xYtY
        p[...] = r
        rsold[...] = np.sum(r * r, axis=1)
        empty = np.diff(indptr) == 0
        x[empty] = 0
        p[empty] = 0
        active[...] = (rsold >= tolerance) & ~empty

    def update(self, x, r, p, Ap, rsold, active, tolerance):
        rows = np.flatnonzero(active)
        pAp = np.sum(p[rows] * Ap[rows], axis=1)
        alpha = (rsold[rows] / pAp)[:, None]
        x[rows] += alpha * p[rows]
        r[rows] -= alpha * Ap[rows]
        rsnew = np.sum(r[rows] * r[rows], axis=1)
        going = rsnew >= tolerance
        active[rows[~going]] = 0
        rows, rsnew = rows[going], rsnew[going]
        p[rows] = r[rows] + (rsnew / rsold[rows])[:, None] * p[rows]
        rsold[rows] = rsnew
