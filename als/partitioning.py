"""Which block each user goes to in the Dask fit, and how many factor rows that makes travel.

In the blocked exchange (:mod:`als.distributed`) user ``u`` is sent, each half-iteration,
to every item block it has an interaction with, except the block that lives on its own
worker. With one block per worker and side, the user rows a worker receives per iteration
are therefore ``sum_u |B(u)| - [block(u) in B(u)]``, where ``B(u)`` is the set of item
blocks ``u`` references. For a fixed cut of the items, putting every user into one of the
blocks of ``B(u)`` reaches the smallest possible count, ``sum_u |B(u)| - 1``: a user whose
interactions all fall in one item block then never travels, and on power-law data many
users have a handful of interactions. Items stay in contiguous ranges.

:func:`locality_assignment` does this for the rows of one block of users (each worker
assigns the users it read), under capacities that keep every target block within
``1 + slack`` of its share of the work (interactions plus ``ROW_COST`` per row, what sets
the time of its solve): the most constrained users (fewest item blocks, then fewest
interactions) choose first, among their item blocks in an order drawn from a hash of
(user, block) so that no block is everyone's first choice; a user whose blocks are all
full goes where room is left. Users referenced by every item
block (the heavy ones, which travel to all other workers anyway) fill the rest.

:func:`received_rows` counts, from the matrix and an assignment, the rows every worker
receives per iteration, without running a fit.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DEFAULT_SLACK",
    "ROW_COST",
    "block_bounds",
    "block_of",
    "locality_assignment",
    "received_rows",
    "user_blocks",
]

#: the largest excess of a block's work over its share, as a fraction
DEFAULT_SLACK = 0.05

#: the work of solving one row, in interactions: per CG step a row's product with the Gram
#: matrix takes ``2 f^2`` flops and an interaction ``4 f``, so a row weighs ``f / 2``
#: interactions (32 at 64 factors)
ROW_COST = 32


def block_bounds(n, n_blocks):
    """Bounds of ``n_blocks`` contiguous ranges of ``n`` ids, as even as rounding allows."""
    return np.linspace(0, n, n_blocks + 1).round().astype(np.int64)


def block_of(ids, bounds):
    """The block of each id when block ``b`` holds ``bounds[b]:bounds[b + 1]``."""
    return np.searchsorted(bounds, ids, side="right") - 1


def _fill(sizes, room):
    """Blocks for rows of ``sizes`` (in order), filling each block's ``room`` in turn."""
    edges = np.cumsum(np.maximum(room, 0.0))
    if edges[-1] <= 0:
        edges = np.arange(1.0, len(room) + 1)
    middle = np.cumsum(sizes) - np.asarray(sizes) / 2
    scale = edges[-1] / max(float(middle[-1]) + float(sizes[-1]) / 2, edges[-1])
    return np.minimum(np.searchsorted(edges, middle * scale), len(room) - 1)


def locality_assignment(block, column_bounds, n_blocks, slack=DEFAULT_SLACK, row_cost=ROW_COST):
    """A target block for every row of ``block``, beside the columns it references.

    Parameters
    ----------
    block : scipy.sparse.csr_matrix
        Rows (users) x all columns (items) of the rows to assign.
    column_bounds : numpy.ndarray
        Column block ``c`` holds columns ``column_bounds[c]:column_bounds[c + 1]``.
    n_blocks : int
        Blocks of rows to assign to (as many as column blocks).
    slack : float
        Each target block receives at most ``(1 + slack)`` times its share of the rows'
        work, ``interactions + row_cost * rows`` (a row larger than that share goes alone
        into an empty block).
    row_cost : float
        The work of a row in interactions (see ``ROW_COST``).

    Returns
    -------
    numpy.ndarray of int64
        ``result[r]`` is the block of row ``r``.
    """
    n_rows = block.shape[0]
    result = np.full(n_rows, -1, dtype=np.int64)
    if n_rows == 0:
        return result
    degree = np.diff(block.indptr).astype(np.int64)
    work = degree + float(row_cost)
    share = float(work.sum()) / n_blocks
    room = np.full(n_blocks, (1 + slack) * share)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), degree)
    pairs = np.unique(rows * n_blocks + block_of(block.indices, column_bounds))
    row, target = pairs // n_blocks, pairs % n_blocks
    spread = np.bincount(row, minlength=n_rows)
    order = np.lexsort((np.arange(n_rows), degree, spread))
    rank = np.empty(n_rows, dtype=np.int64)
    rank[order] = np.arange(n_rows)
    with np.errstate(over="ignore"):
        tie = (row * 0x9E3779B1 + target * 0x85EBCA77) & 0xFFFFFFFF
    by_choice = np.lexsort((tie, rank[row]))
    row, target = row[by_choice], target[by_choice]
    # rounds: every row waiting asks its next block; a block takes them in rank order
    # while it has room, and the rest ask their next block in the following round
    while len(row):
        first = np.ones(len(row), dtype=bool)
        first[1:] = row[1:] != row[:-1]
        asking, asked = row[first], target[first]
        taken = np.zeros(len(asking), dtype=bool)
        for b in np.unique(asked):
            index = np.flatnonzero(asked == b)
            fits = np.cumsum(work[asking[index]]) <= room[b]
            count = len(index) if fits.all() else int(np.argmin(fits))
            if count == 0 and room[b] >= (1 + slack) * share:
                count = 1  # a row larger than a block's share: alone in an empty block
            taken[index[:count]] = True
            room[b] -= work[asking[index[:count]]].sum()
        result[asking[taken]] = asked[taken]
        keep = (result[row] < 0) & ~first
        row, target = row[keep], target[keep]
    # rows whose blocks are all full, and rows without interactions: to the least loaded
    # blocks, raising them to one level
    left = order[result[order] < 0]
    if len(left):
        result[left] = _fill(work[left], _level_room((1 + slack) * share - room, work[left].sum()))
    return result


def _level_room(load, extra):
    """Room per block that lifts the least loaded to one level, ``extra`` in all."""
    low = np.sort(load)
    # raising the k lowest to low[k - 1] costs sum(low[k - 1] - low[:k])
    cost = low * np.arange(1, len(low) + 1) - np.cumsum(low)
    k = int(np.searchsorted(cost, extra, side="right"))
    level = (extra + low[:k].sum()) / k
    return np.maximum(level - load, 0.0)


def user_blocks(user_items, n_blocks, layout="locality", slack=DEFAULT_SLACK, row_cost=ROW_COST):
    """The block of every user, as :func:`als.distributed.partition_interactions` makes them.

    With ``"ranges"`` user blocks are contiguous ranges of ids; with ``"locality"`` each
    range of users (as the workers read them) is assigned by :func:`locality_assignment`
    against item blocks in ranges. Counting with this needs no cluster.
    """
    n_users, n_items = user_items.shape
    ranges = block_bounds(n_users, n_blocks)
    if layout == "ranges" or n_blocks == 1:
        return block_of(np.arange(n_users), ranges)
    item_bounds = block_bounds(n_items, n_blocks)
    return np.concatenate(
        [
            locality_assignment(
                user_items[ranges[s] : ranges[s + 1]], item_bounds, n_blocks, slack, row_cost
            )
            for s in range(n_blocks)
        ]
    )


def received_rows(user_items, user_block, item_block, n_workers):
    """Factor rows each worker receives per iteration, counted from the matrix.

    Block ``b`` of either side lives on worker ``b % n_workers``. Solving users, a user
    block receives the items its users reference that live on another worker; solving
    items, an item block receives the users its items reference that live elsewhere.

    Parameters
    ----------
    user_items : scipy.sparse.csr_matrix
    user_block, item_block : numpy.ndarray
        The block of every user and every item.
    n_workers : int

    Returns
    -------
    dict
        ``"items"`` and ``"users"``: int64 arrays of length ``n_workers``, the item rows
        and the user rows each worker receives per iteration.
    """
    n_users, n_items = user_items.shape
    users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(user_items.indptr))
    items = user_items.indices.astype(np.int64)
    user_blocks = np.asarray(user_block, dtype=np.int64)[users]
    item_blocks = np.asarray(item_block, dtype=np.int64)[items]
    remote = user_blocks % n_workers != item_blocks % n_workers
    # an item travels once to each block whose users reference it (and the same for users)
    item_keys = np.unique(user_blocks[remote] * n_items + items[remote])
    user_keys = np.unique(item_blocks[remote] * n_users + users[remote])
    return {
        "items": np.bincount(item_keys // n_items % n_workers, minlength=n_workers),
        "users": np.bincount(user_keys // n_users % n_workers, minlength=n_workers),
    }
