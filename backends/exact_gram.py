"""The exact solve for array modules: each row's matrix from chunk Gram products, no outer products.

Per row u the exact update solves ``A_u x_u = b_u`` with

    A_u = Y^T Y + lambda I + sum_i (c_ui - 1) y_i y_i^T = YtY + Y_u^T W_u Y_u

where ``Y_u`` holds the factor rows of u's entries and ``W_u`` their weights ``c_ui - 1``.
The reference (``backends.numpy_ref``) forms one f x f outer product per stored entry, which
on a GPU is 4.4 GB for one 67k-entry row at 128 factors. Here the entries are cut into the
chunks of ``backends.cuda_plan.plan_chunks`` (at most ``EXACT_CHUNK_ENTRIES`` each, padded
with zero weights), each chunk's ``Y_c^T W_c Y_c`` is one product of a batched GEMM, and the
chunks of a row are summed by one sparse-dense product (rows x chunks indicator times the
chunk products): memory per row is f x f per chunk, not per entry. The code uses only ``xp``
and its ``sparse`` module, so CI runs it on NumPy/SciPy and the CUDA backend on CuPy.
"""

from __future__ import annotations

import numpy as np

from .cuda_plan import plan_chunks

__all__ = ["EXACT_CHUNK_ENTRIES", "EXACT_BLOCK_ELEMENTS", "row_matrices", "solve_exact"]

#: entries per chunk Gram product (short rows are padded to this many)
EXACT_CHUNK_ENTRIES = 32
#: values of chunk products and row matrices held at once (512 MB of float32)
EXACT_BLOCK_ELEMENTS = 1 << 27


def row_matrices(
    xp, sparse, Cui, Y, YtY, chunk_entries=EXACT_CHUNK_ENTRIES, row_regularization=None
):
    """Return ``A`` of shape (rows, f, f): ``YtY + Y_u^T W_u Y_u`` for every row of ``Cui``.

    ``YtY`` is ``Y^T Y + lambda I`` in the compute dtype, which every product uses;
    ``row_regularization`` (None, or one lambda per row in that dtype) adds
    ``lambda_u I`` to row u's matrix.
    """
    compute = YtY.dtype
    n_rows, factors = Cui.shape[0], Y.shape[1]
    chunk_row, begin, end = plan_chunks(xp, Cui.indptr, chunk_entries)
    n_chunks = len(chunk_row)
    A = xp.broadcast_to(YtY, (n_rows, factors, factors)).copy()
    if row_regularization is not None:
        diagonal = xp.arange(factors)
        A[:, diagonal, diagonal] += row_regularization[:, None]
    if n_chunks == 0:
        return A
    positions = begin[:, None].astype(xp.int64) + xp.arange(chunk_entries)[None, :]
    valid = positions < end[:, None]
    positions = xp.where(valid, positions, 0)
    weights = xp.where(valid, xp.abs(Cui.data[positions]).astype(compute) - 1, 0)
    Yc = Y[Cui.indices[positions]].astype(compute, copy=False)  # (chunks, entries, f)
    grams = xp.matmul((Yc * weights[:, :, None].astype(compute)).transpose(0, 2, 1), Yc)
    # the segmented sum into rows: chunks are ordered by row, so this indicator is CSR
    counts = xp.bincount(chunk_row, minlength=n_rows)
    indptr = xp.zeros(n_rows + 1, dtype=xp.int32)  # cuSPARSE takes int32 CSR
    xp.cumsum(counts, out=indptr[1:])
    indicator = sparse.csr_matrix(
        (xp.ones(n_chunks, dtype=compute), xp.arange(n_chunks, dtype=xp.int32), indptr),
        shape=(n_rows, n_chunks),
    )
    A += (indicator @ grams.reshape(n_chunks, factors * factors)).reshape(A.shape)
    return A


def solve_exact(
    xp,
    sparse,
    Cui,
    X,
    Y,
    YtY,
    chunk_entries=EXACT_CHUNK_ENTRIES,
    block_elements=EXACT_BLOCK_ELEMENTS,
    row_regularization=None,
):
    """Set every row of ``X`` to its exact least-squares solution (rows with no entries: 0).

    Rows are taken in blocks whose chunk products and row matrices hold at most
    ``block_elements`` values; ``X`` may be float16 (stored) with a float32 ``YtY``.
    ``row_regularization`` (None, or one lambda per row of ``X`` in ``YtY``'s dtype) adds
    ``lambda_u I`` to row u's system.
    """
    compute = YtY.dtype
    factors = X.shape[1]
    host_indptr = np.asarray(
        Cui.indptr.get() if hasattr(Cui.indptr, "get") else Cui.indptr, dtype=np.int64
    )
    chunks = -(-np.diff(host_indptr) // chunk_entries)
    # per row: its chunk products, its matrix, and the padded gathered factors
    cost = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum((chunks + 1) * factors * factors + chunks * chunk_entries * factors, out=cost[1:])
    Y_compute = Y.astype(compute, copy=False)
    start, n_rows = 0, len(chunks)
    while start < n_rows:
        stop = int(np.searchsorted(cost, cost[start] + block_elements, side="right")) - 1
        stop = min(max(stop, start + 1), n_rows)
        block = Cui[start:stop]
        own = None if row_regularization is None else row_regularization[start:stop]
        A = row_matrices(xp, sparse, block, Y_compute, YtY, chunk_entries, own)
        liked = xp.where(block.data > 0, xp.abs(block.data), 0).astype(compute)
        b = sparse.csr_matrix((liked, block.indices, block.indptr), shape=block.shape) @ Y_compute
        x = xp.linalg.solve(A, b[:, :, None])[:, :, 0]
        x[xp.diff(block.indptr) == 0] = 0
        X[start:stop] = x.astype(X.dtype)
        start = stop
