"""Interactions into blocks on the Dask workers: from a matrix, a DataFrame or Parquet files.

:func:`partition_interactions` cuts both sides into ``blocks`` contiguous ranges and builds
each block on its owner; from a DataFrame each partition is split by range on its worker and
the pieces go to the range owners, so the whole matrix is never collected on one machine
(see docs/distributed.md). :func:`encode_ids` maps raw ids to the dense ids the blocks need.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse

from als.backends.base import as_int32

from ..errors import InvalidTypeError, InvalidValueError
from ..partitioning import block_bounds
from ..validation import check_positive_int, check_user_items
from .placement import Placement, cluster_workers
from .routing import arrange

__all__ = ["LAYOUTS", "BlockedInteractions", "encode_ids", "partition_interactions"]

#: how users are grouped into blocks (see :func:`partition_interactions`)
LAYOUTS = ("locality", "ranges")


@dataclass
class BlockedInteractions:
    """Confidence-free interaction blocks on the workers (weights; ``alpha`` is applied later).

    Attributes
    ----------
    n_users, n_items : int
        Shape of the users x items matrix.
    user_bounds, item_bounds : numpy.ndarray
        Item block ``c`` holds items ``item_bounds[c]:item_bounds[c + 1]``. User block
        ``b`` holds ``user_bounds[b + 1] - user_bounds[b]`` users: those of ``user_ids[b]``
        (with ``layout="ranges"``, users ``user_bounds[b]:user_bounds[b + 1]``).
    user_blocks, item_blocks : list of distributed.Future
        CSR weight blocks: users x all items, and items x all users.
    user_ids : list of distributed.Future
        The sorted ids of the users of each user block, on its owner.
    item_columns : list of distributed.Future
        For item block ``c``, the user ids its interactions reference, in the order their
        factor rows arrive (by user block, then by position in it), on its owner.
    layout : str
        ``"locality"`` or ``"ranges"`` (see :func:`partition_interactions`).
    owners : list of str
        Worker address that holds (and solves) block ``b``, for both sides.
    user_routes, item_routes : list of distributed.Future
        The out-blocks, computed with the blocks, on the same workers: ``user_routes[b]`` is
        a list whose element ``c`` holds the rows of user block ``b`` (local, sorted) that
        item block ``c`` references; likewise ``item_routes``.
    route_sizes : dict
        ``route_sizes["users"][b, c]`` is ``len(user_routes[b][c])``: how many user rows
        block ``b`` sends item block ``c`` when items are solved; likewise ``"items"``.
    nnz : int
    """

    n_users: int
    n_items: int
    user_bounds: np.ndarray
    item_bounds: np.ndarray
    user_blocks: list
    item_blocks: list
    owners: list
    user_routes: list = field(default_factory=list)
    item_routes: list = field(default_factory=list)
    route_sizes: dict = field(default_factory=dict)
    nnz: int = field(default=0)
    user_ids: list = field(default_factory=list)
    item_columns: list = field(default_factory=list)
    layout: str = "ranges"

    @property
    def shape(self):
        return (self.n_users, self.n_items)


def partition_interactions(
    client,
    user_items,
    *,
    shape=None,
    blocks=None,
    user_col="user",
    item_col="item",
    weight_col="weight",
    layout="locality",
):
    """Put the interactions on the workers in user blocks and item blocks.

    Parameters
    ----------
    client : distributed.Client
    user_items : scipy.sparse matrix, dask.dataframe.DataFrame, str or list of str
        A users x items matrix of weights (sliced on the client: the convenience path), a
        dask DataFrame with dense integer id columns, or Parquet path(s) read as one.
    shape : (int, int), optional
        ``(n_users, n_items)`` of a DataFrame; by default one more than the largest ids.
    blocks : int, optional
        Blocks per side (default: one per worker).
    user_col, item_col, weight_col : str
        Columns of a DataFrame; ``weight_col=None`` weighs every row 1.
    layout : {"locality", "ranges"}
        ``"locality"``: each user joins one of the item blocks it references
        (:func:`als.partitioning.locality_assignment`, on the workers), so fewer user
        rows travel; ``"ranges"``: users in contiguous ranges of ids.

    Returns
    -------
    BlockedInteractions

    Raises
    ------
    TypeError, ValueError
        For input that is neither, or ids that are not dense integers in range (raised
        when the blocks are built).
    """
    if layout not in LAYOUTS:
        raise InvalidValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
    placement = Placement(client, cluster_workers(client))
    blocks = check_positive_int(blocks if blocks is not None else len(placement.owners), "blocks")
    if scipy.sparse.issparse(user_items) or isinstance(user_items, np.ndarray):
        data = _partition_matrix(placement, check_user_items(user_items), blocks)
        return arrange(placement, data, layout)
    if isinstance(user_items, (str, os.PathLike, list, tuple)):
        import dask.dataframe as dd

        columns = [c for c in (user_col, item_col, weight_col) if c is not None]
        user_items = dd.read_parquet(user_items, columns=columns)
    if not hasattr(user_items, "to_delayed"):
        raise InvalidTypeError(
            "user_items must be a scipy.sparse matrix, a dask DataFrame or Parquet path(s), "
            f"not {type(user_items).__name__}"
        )
    data = _partition_frame(placement, user_items, (user_col, item_col, weight_col), shape, blocks)
    return arrange(placement, data, layout)


# -- from a matrix on the client ----------------------------------------------------------------


def _partition_matrix(placement, matrix, blocks):
    """Blocks in ranges of a CSR matrix on the client: each block travels inside its task."""
    n_users, n_items = matrix.shape
    bounds = (block_bounds(n_users, blocks), block_bounds(n_items, blocks))
    # the blocks travel inside their tasks on purpose: the scheduler keeps them, so a lost
    # worker's blocks are rebuilt (so Dask's "Sending large graph" warning is expected)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        sides = [
            _submit_slices(placement, source, side_bounds)
            for source, side_bounds in zip((matrix, matrix.T.tocsr()), bounds, strict=True)
        ]
    return BlockedInteractions(
        n_users, n_items, *bounds, sides[0], sides[1], placement.owners, nnz=matrix.nnz
    )


def _submit_slices(placement, source, bounds):
    """Futures of the row slices ``bounds[b]:bounds[b + 1]`` of ``source``, on their owners."""
    futures = []
    for b in range(len(bounds) - 1):
        part = source[bounds[b] : bounds[b + 1]]
        futures.append(
            placement.submit(
                b, _csr_from_parts, part.indptr, part.indices, part.data, part.shape, pure=False
            )
        )
    return futures


def _csr_from_parts(indptr, indices, data, shape):
    """A user or item block shipped from the client's CSR (its arrays travel in the task)."""
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=shape)


# -- from a dask DataFrame, on the workers ------------------------------------------------------


def _partition_frame(placement, frame, columns, shape, blocks):
    """Blocks in ranges built on the workers from the partitions of a dask DataFrame."""
    import dask

    user_col, item_col, _ = columns
    if shape is None:
        largest = dask.compute(frame[user_col].max(), frame[item_col].max())
        shape = (int(largest[0]) + 1, int(largest[1]) + 1)
    n_users, n_items = (check_positive_int(n, "shape") for n in shape)
    user_bounds, item_bounds = block_bounds(n_users, blocks), block_bounds(n_items, blocks)
    splits = placement.client.compute(
        [
            dask.delayed(_split_partition)(part, columns, user_bounds, item_bounds, shape)
            for part in frame.to_delayed()
        ]
    )
    sides = []
    for side, bounds, columns_of_side in (
        ("users", user_bounds, n_items),
        ("items", item_bounds, n_users),
    ):
        futures = []
        for b in range(blocks):
            pieces = [placement.submit(b, _piece_for_block, split, side, b) for split in splits]
            rows = int(bounds[b + 1] - bounds[b])
            futures.append(placement.submit(b, _csr_from_pieces, (rows, columns_of_side), *pieces))
        sides.append(futures)
    client = placement.client
    nnz = sum(client.gather([client.submit(_interaction_count, block) for block in sides[0]]))
    return BlockedInteractions(
        n_users, n_items, user_bounds, item_bounds, sides[0], sides[1], placement.owners, nnz=nnz
    )


def _split_partition(frame, columns, user_bounds, item_bounds, shape):
    """Split one partition's (user, item, weight) rows by user block and by item block."""
    user_col, item_col, weight_col = columns
    users = _id_column(frame, user_col, shape[0])
    items = _id_column(frame, item_col, shape[1])
    if weight_col is None:
        weights = np.ones(len(frame), dtype=np.float32)
    else:
        weights = frame[weight_col].to_numpy()
        if not np.issubdtype(weights.dtype, np.number) or np.issubdtype(
            weights.dtype, np.complexfloating
        ):
            raise InvalidTypeError(
                f"column {weight_col!r} must hold real weights, not {weights.dtype}"
            )
        weights = weights.astype(np.float32)
    return {
        "users": _pieces(users, items, weights, user_bounds),
        "items": _pieces(items, users, weights, item_bounds),
    }


def _id_column(frame, column, upper):
    """A column of dense integer ids as int64, checked to lie in ``0..upper - 1``."""
    ids = frame[column].to_numpy()
    if not np.issubdtype(ids.dtype, np.integer):
        raise InvalidTypeError(
            f"column {column!r} must hold dense integer ids, not {ids.dtype} "
            "(map raw ids with als.distributed.encode_ids)"
        )
    if len(ids) and (ids.min() < 0 or ids.max() >= upper):
        bad = ids[(ids < 0) | (ids >= upper)][0]
        raise InvalidValueError(f"column {column!r} holds id {bad}, out of range 0..{upper - 1}")
    return ids.astype(np.int64)


def _pieces(rows, columns, weights, bounds):
    """(local rows, columns, weights) of each block of ``rows``."""
    block = np.searchsorted(bounds, rows, side="right") - 1
    order = np.argsort(block, kind="stable")
    splits = np.searchsorted(block[order], np.arange(1, len(bounds) - 1))
    return [
        (rows[part] - bounds[b], as_int32(columns[part], "item ids"), weights[part])
        for b, part in enumerate(np.split(order, splits))
    ]


def _piece_for_block(split, side, block):
    """What one partition's split sends block ``block`` of ``side`` (``"users"``/``"items"``)."""
    return split[side][block]


def _csr_from_pieces(shape, *pieces):
    """One block's CSR from the pieces every partition sent it; duplicates are summed."""
    rows = np.concatenate([piece[0] for piece in pieces])
    columns = np.concatenate([piece[1] for piece in pieces])
    weights = np.concatenate([piece[2] for piece in pieces])
    return scipy.sparse.csr_matrix((weights, (rows, columns)), shape=shape)


def _interaction_count(block):
    return block.nnz


# -- raw ids ------------------------------------------------------------------------------------


def encode_ids(frame, user_col="user", item_col="item"):
    """Map raw user and item ids of a dask DataFrame to dense ``0..n-1`` ids.

    Ids are numbered in sorted order, as :func:`als.data.load` numbers them. The sorted
    unique ids of both columns are computed on the cluster and returned to the client
    (``n_users + n_items`` values), then each partition is mapped by binary search.

    Returns
    -------
    frame : dask.dataframe.DataFrame
        The same rows with dense integer ids in ``user_col`` and ``item_col``.
    user_ids, item_ids : numpy.ndarray
        ``user_ids[row]`` is the raw id of a dense user id; likewise for items.
    """
    import dask

    user_ids, item_ids = dask.compute(frame[user_col].unique(), frame[item_col].unique())
    user_ids, item_ids = np.sort(np.asarray(user_ids)), np.sort(np.asarray(item_ids))

    def encode(part, users, items):
        part = part.copy()
        part[user_col] = np.searchsorted(users, part[user_col].to_numpy())
        part[item_col] = np.searchsorted(items, part[item_col].to_numpy())
        return part

    meta = frame._meta.assign(**{user_col: np.int64(0), item_col: np.int64(0)})
    encoded = frame.map_partitions(encode, user_ids, item_ids, meta=meta)
    return encoded, _plain(user_ids), _plain(item_ids)


def _plain(ids):
    """String ids as a NumPy str array (pandas hands them over as objects)."""
    if ids.dtype == object and all(isinstance(i, str) for i in ids):
        return ids.astype(str)
    return ids
