"""Which user block each user joins, and which factor rows each block sends where (its routes).

Spark MLlib's in-blocks and out-blocks, computed once on the workers when the blocks are
built (see docs/distributed.md). :func:`arrange` regroups the users of contiguous ranges
into blocks beside the items they reference (``layout="locality"``), then computes every
block's out-blocks: for each block ``c`` of the other side, the sorted rows of this block
that ``c`` references. The client keeps only their ``blocks x blocks`` sizes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from ..fitting import ITEMS, USERS
from ..partitioning import block_of, locality_assignment
from .tasks import ids_in_range

__all__ = ["arrange"]


def _out_routes(block, other_bounds):
    """Rows of ``block`` that each block of the other side references (its out-blocks).

    Row ``r`` goes to other block ``c`` when it has an entry in a column of ``c``: then
    ``c``'s transposed block has this row among its columns. Returns one sorted int64 array
    of local rows per other block.
    """
    return _routes_to(block, block_of(block.indices, other_bounds), len(other_bounds) - 1)


def _routes_to(block, target, n_blocks):
    """Sorted rows of ``block`` with an entry whose column lives in block ``target[entry]``."""
    n_rows = block.shape[0]
    if n_rows == 0 or block.nnz == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(n_blocks)]
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(block.indptr))
    keys = np.unique(np.asarray(target, dtype=np.int64) * n_rows + rows)
    splits = np.searchsorted(keys // n_rows, np.arange(1, n_blocks))
    return np.split(keys % n_rows, splits)


def _ids_routed_to(ids, routes, target):
    """The user ids a user block sends item block ``target`` (the rows of its route there)."""
    return ids[routes[target]]


def _columns_in_arrival_order(*route_ids):
    """An item block's user columns in the order their rows arrive: by user block."""
    if not route_ids:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(route_ids).astype(np.int64)


def _item_routes(block, *route_ids):
    """Out-blocks of an item block, from the user ids every user block sends it.

    Item row ``r`` goes to user block ``b`` when one of its users is among ``route_ids[b]``
    (every user the block references is in exactly one of them).
    """
    columns = _columns_in_arrival_order(*route_ids)
    owner = np.repeat(np.arange(len(route_ids)), [len(ids) for ids in route_ids])
    order = np.argsort(columns, kind="stable")
    found = np.minimum(np.searchsorted(columns[order], block.indices), max(len(columns) - 1, 0))
    target = owner[order[found]] if len(columns) else np.zeros(0, dtype=np.int64)
    return _routes_to(block, target, len(route_ids))


def _route_sizes(routes):
    """How many rows one block sends each block of the other side."""
    return np.array([len(rows) for rows in routes], dtype=np.int64)


def _rows_to(block, assignment, target, first_id):
    """The rows of a range of users that go to user block ``target``, and their ids."""
    rows = np.flatnonzero(assignment == target)
    return block[rows], rows + first_id


def _stack_rows(*pieces):
    """One user block from the rows every range sends it, with their (sorted) ids."""
    return (
        scipy.sparse.vstack([piece[0] for piece in pieces], format="csr"),
        np.concatenate([piece[1] for piece in pieces]),
    )


def _stacked_rows(stacked):
    """The weights of a user block stacked by :func:`_stack_rows`."""
    return stacked[0]


def _stacked_ids(stacked):
    """The sorted user ids of a user block stacked by :func:`_stack_rows`."""
    return stacked[1]


def _id_count(ids):
    return len(ids)


def arrange(placement, data, layout):
    """Regroup the users (``layout="locality"``), then compute the routes, on the workers.

    ``data`` (a ``BlockedInteractions``) holds users in contiguous ranges. With
    ``"locality"`` each range's owner assigns its users to blocks
    (:func:`als.partitioning.locality_assignment`: its share of every block's capacity) and
    sends each block its rows; block ``b`` stacks them in the order of the ranges, so its
    ids stay sorted. The client learns the block sizes. Returns ``data``, updated.
    """
    n_blocks = len(data.user_bounds) - 1
    data.layout = layout
    ranges = data.user_bounds
    if layout == "ranges" or n_blocks == 1:
        data.user_ids = [
            placement.submit(b, ids_in_range, int(ranges[b]), int(ranges[b + 1]))
            for b in range(n_blocks)
        ]
    else:
        assignments = [
            placement.submit(s, locality_assignment, block, data.item_bounds, n_blocks)
            for s, block in enumerate(data.user_blocks)
        ]
        stacked = []
        for b in range(n_blocks):
            pieces = [
                placement.submit(s, _rows_to, data.user_blocks[s], assignment, b, int(ranges[s]))
                for s, assignment in enumerate(assignments)
            ]
            stacked.append(placement.submit(b, _stack_rows, *pieces))
        data.user_blocks = [placement.submit(b, _stacked_rows, s) for b, s in enumerate(stacked)]
        data.user_ids = [placement.submit(b, _stacked_ids, s) for b, s in enumerate(stacked)]
        sizes = placement.client.gather(
            [placement.submit(b, _id_count, ids) for b, ids in enumerate(data.user_ids)]
        )
        data.user_bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return _with_routes(placement, data)


def _with_routes(placement, data):
    """Compute every block's out-blocks on its owner, once; the client keeps their sizes.

    User blocks find the item block of each column by its range. Each then sends every
    item block the ids of the users it routes there, from which the item block learns
    its columns' order and its own out-blocks.
    """
    n_blocks = len(data.user_bounds) - 1
    data.user_routes = [
        placement.submit(b, _out_routes, block, data.item_bounds)
        for b, block in enumerate(data.user_blocks)
    ]
    route_ids = [
        [
            placement.submit(b, _ids_routed_to, data.user_ids[b], data.user_routes[b], c)
            for b in range(n_blocks)
        ]
        for c in range(n_blocks)
    ]
    data.item_columns = [
        placement.submit(c, _columns_in_arrival_order, *ids) for c, ids in enumerate(route_ids)
    ]
    data.item_routes = [
        placement.submit(c, _item_routes, block, *route_ids[c])
        for c, block in enumerate(data.item_blocks)
    ]
    for side, routes in ((USERS, data.user_routes), (ITEMS, data.item_routes)):
        sizes = placement.client.gather(
            [placement.submit(b, _route_sizes, r) for b, r in enumerate(routes)]
        )
        data.route_sizes[side.name] = np.stack(sizes)
    return data
