"""The Dask fit's tasks on the workers: solver blocks, Gram partials, block solves, loss parts.

Each function runs on the owner of one block (see :mod:`als.distributed.placement`) with
that block's arrays and, for a solve or the loss, the other side's rows the block references
(its in-block, in the pieces :func:`routed_rows` cut from the other side's blocks). Dask
names a task's results after its function, so these names are what a worker's transfer log
shows travelling.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from als.backends.base import get_backend

from ..fitting import confidence, solve_side
from ..validation import check_user_items

__all__ = [
    "block_loss",
    "finish_gram",
    "gram_partial",
    "ids_in_range",
    "routed_rows",
    "row_lambdas",
    "solve_block",
    "solver_block",
    "squared_norm",
    "sum_pair",
]


def ids_in_range(start, stop):
    """The ids ``start..stop - 1`` of a block held as a contiguous range."""
    return np.arange(start, stop, dtype=np.int64)


def solver_block(block, alpha, columns=None):
    """The confidences of one block with its columns renumbered to the rows it references.

    The confidences are exactly those ``fit`` prepares (canonical float32, ``alpha``
    applied), stored in the same order. Column ``j`` of the result is ``columns[j]``, the
    order in which its in-block arrives (see :func:`routed_rows`); by default the ``j``-th
    smallest column the block references (the order when the other side is in ranges).
    """
    block = confidence(check_user_items(block, "a block"), alpha)
    if columns is None:
        columns, local = np.unique(block.indices, return_inverse=True)
    else:
        order = np.argsort(columns, kind="stable")
        found = np.minimum(np.searchsorted(columns[order], block.indices), len(columns) - 1)
        local = order[found] if len(columns) else found
        if len(block.indices) and not np.array_equal(columns[local], block.indices):
            raise RuntimeError("a block references rows its routes do not bring")
    return scipy.sparse.csr_matrix(
        (block.data, local.astype(np.int32), block.indptr),
        shape=(block.shape[0], len(columns)),
    )


def row_lambdas(raw, settings):
    """Per-row lambdas of one block (``nu``), from its own counts and the other side's size.

    ``raw`` is the block's weights with every column of the other side (users x all items,
    or items x all users), as ``AlternatingLeastSquares.fit`` computes them from the whole
    matrix; None without ``nu``.
    """
    return settings.row_regularization(check_user_items(raw, "a block"))


def gram_partial(factors):
    """``X_b^T X_b`` of one factor block, in float64."""
    rows = factors.astype(np.float64)
    return rows.T @ rows


def sum_pair(first, second):
    """One node of the Gram matrix's summation tree."""
    return first + second


def finish_gram(total, regularization, dtype):
    """The Gram matrix the solves use, from the sum of every block's partial."""
    # the same expression as the backends' gram, applied to the summed partials
    gram = total.astype(dtype)
    return gram + np.asarray(regularization, dtype=dtype) * np.eye(len(gram), dtype=dtype)


def routed_rows(factors, routes, target):
    """The rows of one factor block that block ``target`` of the other side references."""
    return np.ascontiguousarray(factors[routes[target]])


def _in_block(block, pieces, factors, dtype):
    """The other side's rows one block references, in its column order, from their pieces."""
    if not pieces:
        return np.zeros((0, factors), dtype=dtype)
    rows = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
    if rows.shape[0] != block.shape[1]:
        raise RuntimeError(
            f"a block references {block.shape[1]} rows of the other side but was sent "
            f"{rows.shape[0]}: the routes and the blocks disagree"
        )
    return rows


def _thread_count(num_threads):
    """``num_threads``, or with 0 the worker's thread count (0 outside a worker)."""
    if num_threads:
        return num_threads
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return 0


def solve_block(block, own, gram, cg_steps, num_threads, where, lambdas, *pieces):
    """New factors for one block's rows given the other side's rows it references.

    ``where`` is ``(iteration, side)``, named by the error ``solve_side`` raises when the
    new factors are not all finite.
    """
    backend = get_backend("cpu", _thread_count(num_threads))
    # a copy: ``own`` is the previous half-iteration's block and must stay as it was
    rows = np.array(own, order="C")
    other = _in_block(block, pieces, rows.shape[1], rows.dtype)
    iteration, side = where
    with backend.threads():
        solve_side(backend, block, rows, other, gram, cg_steps, iteration, side, lambdas)
    return rows


def squared_norm(factors, lambdas=None):
    """``|X_b|^2`` of one factor block, or with per-row ``lambdas`` ``sum_u lambda_u |x_u|^2``."""
    backend = get_backend("cpu")
    if lambdas is None:
        return backend.squared_norm(factors)
    return backend.squared_norm(factors, lambdas)


def block_loss(block, rows, gram64, n_columns, num_threads, lambdas, *pieces):
    """(``LossParts``, penalty) of one user block, given the item rows it references.

    The backend sees only the referenced item rows, so its Gramian term is corrected to the
    whole item Gram matrix ``gram64`` (float64) and its missing cells to all ``n_columns``.
    The penalty is ``|X_b|^2``, or with per-row ``lambdas`` ``sum_u lambda_u |x_u|^2``.
    """
    backend = get_backend("cpu", _thread_count(num_threads))
    other = _in_block(block, pieces, rows.shape[1], rows.dtype)
    with backend.threads():
        parts = backend.loss_parts(block, rows, other)
    x, y = rows.astype(np.float64), other.astype(np.float64)
    gramian_local = float(np.sum((x @ (y.T @ y)) * x))
    gramian_all = float(np.sum((x @ gram64) * x))
    parts = parts._replace(
        unobserved=parts.unobserved - gramian_local + gramian_all,
        missing=block.shape[0] * n_columns - block.nnz,
    )
    return parts, squared_norm(rows, lambdas)
