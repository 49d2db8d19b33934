"""Array-module code: the algorithm stated once over ``xp``, run by NumPy and by CuPy.

Every operation works on all rows at once: the conjugate-gradient step is written once over
a block of rows, where ``Y^T Y p`` is one matrix product and the sparse part is a sampled
dot product followed by a sparse-dense product. The code only uses the array module ``xp``
and the sparse module ``sparse`` it was built with, so the same statement runs under
NumPy/SciPy (``backends.numpy_ref``, the oracle) and under CuPy (``backends.cupy_cuda``).

Two classes, by what their users really share:

- ``ArrayAlgebra``: memory moves and the dense factor algebra (Gram matrix, norms, the
  finiteness check), which every backend, Numba's included, computes the same way;
- ``ArrayModuleBackend``: the solve, the loss and top-k selection in array code.

Mathematics (Hu, Koren, Volinsky 2008; CG after Takacs, Pilaszy, Tikk 2011), per row u with
confidences c_ui = |Cui[u, i]| and preferences p_ui = [Cui[u, i] > 0]:

    A_u = Y^T Y + lambda I + sum_i (c_ui - 1) y_i y_i^T    (lambda_u I with a per-row lambda)
    b_u = sum_{i: p_ui = 1} c_ui y_i
    x_u = A_u^{-1} b_u

CG is warm-started from the current x_u: r = b - A x, p = r, then up to ``cg_steps`` steps,
stopping early once r.r < 1e-20 (``base.CG_TOLERANCE``, shared by every backend).
"""

from __future__ import annotations

import contextlib

import numpy as np
import scipy.sparse

from .base import BLOCK_ELEMENTS, CG_TOLERANCE, LossParts, check_int32_ids

__all__ = ["ArrayAlgebra", "ArrayModuleBackend"]


class ArrayAlgebra:
    """Memory moves and dense factor algebra over an array module.

    Parameters
    ----------
    num_threads : int
        Kept for the subclasses that size thread pools with it.
    xp, sparse : module
        The array module and its CSR sparse module (``numpy``/``scipy.sparse`` by default).
    """

    def __init__(self, num_threads=0, xp=np, sparse=scipy.sparse):
        self.num_threads = num_threads
        self.xp = xp
        self.sparse = sparse

    def __repr__(self):
        return f"{type(self).__name__}(num_threads={self.num_threads})"

    # -- memory -------------------------------------------------------------------------

    def to_device(self, array_or_csr):
        if scipy.sparse.issparse(array_or_csr):
            return self.sparse.csr_matrix(array_or_csr)
        return self.xp.ascontiguousarray(self.xp.asarray(array_or_csr))

    def to_host(self, array):
        return np.asarray(array)

    def threads(self):
        return contextlib.nullcontext()

    # -- factor algebra -------------------------------------------------------------------

    def gram(self, Y, regularization):
        xp = self.xp
        return Y.T @ Y + xp.asarray(regularization, dtype=Y.dtype) * xp.eye(
            Y.shape[1], dtype=Y.dtype
        )

    def all_finite(self, array):
        return bool(self.xp.isfinite(array).all())

    def norms(self, factors):
        xp = self.xp
        norms = xp.sqrt(xp.sum(factors * factors, axis=1))
        norms[norms == 0] = 1e-10
        return norms

    def squared_norm(self, array, row_weights=None):
        squares = array.astype(self.xp.float64) ** 2
        if row_weights is None:
            return float(self.xp.sum(squares))
        return float(self.xp.sum(row_weights.astype(self.xp.float64) * self.xp.sum(squares, 1)))


class ArrayModuleBackend(ArrayAlgebra):
    """Solve, loss and top-k written once in array code (see the module docstring)."""

    def solve(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        # overflow shows as NaN or inf in X, which the model's finiteness guard reports
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            self._solve_blocks(Cui, X, Y, YtY, cg_steps, row_regularization)

    def _solve_blocks(self, Cui, X, Y, YtY, cg_steps, row_regularization):
        factors = X.shape[1]
        # the exact solve holds one f x f outer product per stored entry
        per_entry = factors * factors if cg_steps is None else factors
        for start, stop in self._row_blocks(Cui.indptr, per_entry):
            block = Cui[start:stop]
            own = None if row_regularization is None else row_regularization[start:stop]
            if cg_steps is None:
                X[start:stop] = self._solve_exact(block, Y, YtY, own)
            else:
                X[start:stop] = self._solve_cg(block, X[start:stop], Y, YtY, cg_steps, own)

    def solve_subspace(self, Cui, X, Y, YtY, block_size, sweeps=1, row_regularization=None):
        factors = X.shape[1]
        # each block's subproblem holds one block_size^2 outer product per stored entry
        per_entry = min(block_size, factors) ** 2
        for start, stop in self._row_blocks(Cui.indptr, per_entry):
            own = None if row_regularization is None else row_regularization[start:stop]
            X[start:stop] = self._solve_subspace(
                Cui[start:stop], X[start:stop], Y, YtY, block_size, sweeps, own
            )

    def loss_parts(self, Cui, X, Y):
        xp = self.xp
        X64, Y64 = X.astype(xp.float64), Y.astype(xp.float64)
        # x_u^T (Y^T Y) x_u summed over users: every cell's s^2, as if it were missing
        gramian = float(xp.sum((X64 @ (Y64.T @ Y64)) * X64))
        observed = stored_squares = total_confidence = 0.0
        for start, stop in self._row_blocks(Cui.indptr, X.shape[1]):
            block = Cui[start:stop]
            confidence, liked, rows = self._entries(block)
            confidence = confidence.astype(xp.float64)
            score = xp.sum(Y64[block.indices] * X64[start:stop][rows], axis=1)
            # implicit adds c (not c p^2) for every stored entry, disliked ones included
            observed += float(xp.sum(confidence * (1 + score * score - 2 * liked * score)))
            stored_squares += float(xp.sum(score * score))
            total_confidence += float(xp.sum(confidence))
        n_rows, n_columns = Cui.shape
        missing = n_rows * n_columns - int(Cui.nnz)
        return LossParts(observed, gramian - stored_squares, total_confidence, missing)

    def topk(self, queries, factors, k, exclude=None, exclude_all=None, norms=None):
        xp = self.xp
        n_queries, n_items = queries.shape[0], factors.shape[0]
        check_int32_ids(n_items, "factors")
        ids = np.empty((n_queries, k), dtype=np.int32)
        scores = np.empty((n_queries, k), dtype=factors.dtype)
        rows_per_block = max(1, BLOCK_ELEMENTS // max(n_items, 1))
        for start in range(0, n_queries, rows_per_block):
            stop = min(start + rows_per_block, n_queries)
            with np.errstate(over="ignore", invalid="ignore"):  # the model checks scores
                block = queries[start:stop] @ factors.T
                if norms is not None:
                    block /= norms
            if exclude is not None:
                excluded = exclude[start:stop]
                block[self._entry_rows(excluded.indptr), excluded.indices] = -xp.inf
            if exclude_all is not None:
                block[:, exclude_all] = -xp.inf
            block_ids, block_scores = self._select_top_k(block, k)
            ids[start:stop] = self.to_host(block_ids)
            scores[start:stop] = self.to_host(block_scores)
        return ids, scores

    # -- the pieces ------------------------------------------------------------------------

    def _solve_cg(self, Cui, X, Y, YtY, cg_steps, row_regularization=None):
        """Return ``cg_steps`` CG steps for the rows of ``Cui``, starting from ``X``.

        ``row_regularization`` (one value per row, or None) is added to each row's diagonal.
        """
        xp = self.xp
        confidence, liked, rows = self._entries(Cui)
        Yi = Y[Cui.indices]

        def A_dot(V):
            # A V = V (Y^T Y + lambda I) + sum_i (c_ui - 1) (y_i . v_u) y_i  [+ lambda_u v_u]
            weights = (confidence - 1) * xp.sum(Yi * V[rows], axis=1)
            product = V @ YtY + self._csr_like(Cui, weights.astype(V.dtype)) @ Y
            if row_regularization is not None:
                product += row_regularization[:, None] * V
            return product

        b = self._csr_like(Cui, (confidence * liked).astype(X.dtype)) @ Y
        x = X.copy()
        r = b - A_dot(x)
        p = r.copy()
        rsold = xp.sum(r * r, axis=1)
        active = rsold >= CG_TOLERANCE
        for _ in range(cg_steps):
            if not bool(xp.any(active)):
                break
            Ap = A_dot(p)
            pAp = xp.sum(p * Ap, axis=1)
            alpha = xp.where(active, rsold / xp.where(active, pAp, 1), 0)
            x += alpha[:, None] * p
            r -= alpha[:, None] * Ap
            rsnew = xp.sum(r * r, axis=1)
            # a row whose residual vanished keeps this step's x and takes no further steps
            active &= rsnew >= CG_TOLERANCE
            beta = xp.where(active, rsnew / xp.where(active, rsold, 1), 0)
            p = r + beta[:, None] * p
            rsold = rsnew
        x[xp.diff(Cui.indptr) == 0] = 0
        return x

    def _solve_exact(self, Cui, Y, YtY, row_regularization=None):
        """Return the exact least-squares solution for the rows of ``Cui``.

        ``row_regularization`` (one value per row, or None) is added to each row's diagonal.
        """
        xp = self.xp
        n_rows, factors = Cui.shape[0], Y.shape[1]
        confidence, liked, _ = self._entries(Cui)
        Yi = Y[Cui.indices]
        outer = (Yi[:, :, None] * Yi[:, None, :]).reshape(len(Yi), factors * factors)
        # A_u = YtY + sum_i (c_ui - 1) y_i y_i^T, one sparse-dense product for all rows
        sums = self._csr_like(Cui, (confidence - 1).astype(Y.dtype), columns=len(Yi))
        A = YtY[None, :, :] + (sums @ outer).reshape(n_rows, factors, factors)
        if row_regularization is not None:
            A += row_regularization[:, None, None] * xp.eye(factors, dtype=Y.dtype)
        b = self._csr_like(Cui, (confidence * liked).astype(Y.dtype)) @ Y
        x = xp.linalg.solve(A, b[:, :, None])[:, :, 0]
        x[xp.diff(Cui.indptr) == 0] = 0
        return x.astype(Y.dtype)

    def _solve_subspace(self, Cui, X, Y, YtY, block_size, sweeps, row_regularization=None):
        """Return ``sweeps`` iALS++ sweeps for the rows of ``Cui``, starting from ``X``.

        Block coordinate descent (Rendle et al. 2021): for each block B of ``block_size``
        dimensions in turn, x_B += A_BB^-1 r_B with r = b - A x, the exact minimiser of the
        row's loss over x_B with the other dimensions fixed. The predictions s_i = y_i . x
        of the stored entries are kept up to date, so one block reads the sparse data once:

            r_B  = sum_i (c_i p_i - (c_i - 1) s_i) y_iB - (YtY x)_B
            A_BB = YtY_BB + sum_i (c_i - 1) y_iB y_iB^T

        ``row_regularization`` (one value per row, or None) adds lambda_u I to each row's
        system: -lambda_u x_B to r_B and lambda_u I to A_BB.
        """
        xp = self.xp
        n_rows, factors = X.shape
        confidence, liked, rows = self._entries(Cui)
        Yi = Y[Cui.indices]
        x = X.copy()
        predictions = xp.sum(Yi * x[rows], axis=1)
        for _ in range(sweeps):
            for low in range(0, factors, block_size):
                high = min(low + block_size, factors)
                size = high - low
                YiB = Yi[:, low:high]
                weights = (confidence * liked - (confidence - 1) * predictions).astype(X.dtype)
                r = self._csr_like(Cui, weights) @ Y[:, low:high] - x @ YtY[:, low:high]
                outer = (YiB[:, :, None] * YiB[:, None, :]).reshape(len(YiB), size * size)
                sums = self._csr_like(Cui, (confidence - 1).astype(Y.dtype), columns=len(YiB))
                A = YtY[None, low:high, low:high] + (sums @ outer).reshape(n_rows, size, size)
                if row_regularization is not None:
                    r -= row_regularization[:, None] * x[:, low:high]
                    A = A + row_regularization[:, None, None] * xp.eye(size, dtype=Y.dtype)
                step = xp.linalg.solve(A, r[:, :, None])[:, :, 0].astype(X.dtype)
                x[:, low:high] += step
                predictions = predictions + xp.sum(YiB * step[rows], axis=1)
        x[xp.diff(Cui.indptr) == 0] = 0
        return x

    def _entries(self, Cui):
        """Return per-entry confidence ``|c|``, preference ``c > 0`` and row index."""
        xp = self.xp
        return xp.abs(Cui.data), Cui.data > 0, self._entry_rows(Cui.indptr)

    def _entry_rows(self, indptr):
        xp = self.xp
        entries = xp.arange(int(indptr[-1]) - int(indptr[0]))
        return xp.searchsorted(indptr[1:] - indptr[0], entries, side="right")

    def _csr_like(self, Cui, data, columns=None):
        """A CSR matrix with ``Cui``'s rows and ``data``; ``columns`` numbers the entries."""
        xp = self.xp
        if columns is None:
            return self.sparse.csr_matrix((data, Cui.indices, Cui.indptr), shape=Cui.shape)
        indptr = Cui.indptr - Cui.indptr[0]
        indices = xp.arange(columns, dtype=indptr.dtype)
        return self.sparse.csr_matrix((data, indices, indptr), shape=(Cui.shape[0], columns))

    def _row_blocks(self, indptr, per_entry):
        """Yield (start, stop) row ranges whose entries x ``per_entry`` fit the block size."""
        host_indptr = self.to_host(indptr).astype(np.int64)
        n_rows = len(host_indptr) - 1
        budget = max(BLOCK_ELEMENTS // max(per_entry, 1), 1)
        start = 0
        while start < n_rows:
            limit = host_indptr[start] + budget
            stop = int(np.searchsorted(host_indptr, limit, side="right")) - 1
            stop = min(max(stop, start + 1), n_rows)
            yield start, stop
            start = stop

    def _select_top_k(self, scores, k):
        """Top ``k`` of each row of ``scores``: by score descending, ties by id ascending."""
        xp = self.xp
        n_items = scores.shape[1]
        if k < n_items:
            candidates = xp.argpartition(-scores, k - 1, axis=1)[:, :k]
            # ties at the k-th score must be settled by id, so take every tied id too
            kth = xp.take_along_axis(scores, candidates, axis=1).min(axis=1)
            if bool(xp.any(xp.sum(scores >= kth[:, None], axis=1) > k)):
                candidates = xp.broadcast_to(xp.arange(n_items), scores.shape)
        else:
            candidates = xp.broadcast_to(xp.arange(n_items), scores.shape)
        candidate_scores = xp.take_along_axis(scores, candidates, axis=1)
        order = xp.lexsort(xp.stack([candidates, -candidate_scores]), axis=-1)[:, :k]
        ids = xp.take_along_axis(candidates, order, axis=1).astype(np.int32)
        best = xp.take_along_axis(candidate_scores, order, axis=1)
        ids[xp.isneginf(best)] = -1
        return ids, best
