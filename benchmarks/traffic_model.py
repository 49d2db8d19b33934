"""The traffic and memory model of the blocked Dask fit: formulas, checked by measurement.

``python -m benchmarks.distributed traffic`` sets these predictions beside what it measures
on a local cluster, and ``estimate`` applies them to a size no machine here can hold.

Bytes into worker w per iteration, solving both sides S::

    sum over w's blocks b of S, over blocks c of the other side owned elsewhere:
        route_sizes[other][c, b] * f * 4        (only the rows b references)
    + Gram partials and matrices, a few f^2 * 8 bytes

Memory of worker w while fitting, beyond an idle worker's::

    its blocks' interactions (CSR: 8 B per entry + 8 B per row, both sides)
    + its factor rows (old and new: 2 * rows * f * 4)
    + the other side's rows its blocks reference (pieces and in-block: 2 * refs * f * 4)
    + the out-block row lists (8 B per routed row)

The baseline beside it is a broadcast design, in which every worker receives the full other
side each half-iteration: ``(1 + 1/W) (n_users + n_items) f 4`` bytes per iteration.
"""

from __future__ import annotations

import numpy as np


def predicted_received(blocked, factors):
    """Bytes into each worker per iteration from the routes (rows only), by worker address."""
    owners, n_blocks = blocked.owners, len(blocked.user_bounds) - 1
    received = dict.fromkeys(owners, 0)
    for other in ("users", "items"):
        sizes = blocked.route_sizes[other]
        for b in range(n_blocks):
            here = owners[b % len(owners)]
            for c in range(n_blocks):
                if owners[c % len(owners)] != here:
                    received[here] += int(sizes[c, b]) * factors * 4
    return received


def predicted_memory(blocked, nnz_by_block, factors):
    """Bytes each worker holds while fitting beyond an idle worker's (see the module doc)."""
    owners, n_blocks = blocked.owners, len(blocked.user_bounds) - 1
    memory = dict.fromkeys(owners, 0)
    for side, bounds, other in (
        ("users", blocked.user_bounds, "items"),
        ("items", blocked.item_bounds, "users"),
    ):
        for b in range(n_blocks):
            here = owners[b % len(owners)]
            rows = int(bounds[b + 1] - bounds[b])
            referenced = int(blocked.route_sizes[other][:, b].sum())
            routed = int(blocked.route_sizes[side][b].sum())
            memory[here] += 8 * nnz_by_block[side][b] + 8 * rows
            memory[here] += 2 * rows * factors * 4 + 2 * referenced * factors * 4 + 8 * routed
            # the block's ids (users) or its columns' order (items)
            memory[here] += 8 * (rows if side == "users" else referenced)
    return memory


def expected_distinct(n, exponent, draws, chunk=1 << 24):
    """Expected distinct ids among ``draws`` draws with ``P(k) ~ k^-exponent``, k = 1..n.

    ``sum_k 1 - exp(-draws p_k)`` (Poisson): the rows one block references when its
    interactions pick the other side by popularity, as ``power_law_matrix`` draws them.
    """
    total = sum(
        float(np.sum(np.arange(start, min(start + chunk, n) + 1, dtype=np.float64) ** -exponent))
        for start in range(1, n + 1, chunk)
    )
    distinct = 0.0
    for start in range(1, n + 1, chunk):
        k = np.arange(start, min(start + chunk, n) + 1, dtype=np.float64)
        distinct += float(np.sum(-np.expm1(-draws * k**-exponent / total)))
    return distinct


def blocked_estimate(
    n_users, n_items, nnz, factors, workers, user_exp=0.8, item_exp=0.9, layout="locality"
):
    """Bytes into a worker per iteration and its data while fitting, one block per worker.

    A user block's ``nnz / W`` interactions reference ``R_i`` distinct items, an item
    block's ``R_u`` distinct users (:func:`expected_distinct`). With users in ranges,
    ``(W - 1) / W`` of both live on other workers. With the locality assignment every
    user with interactions (``N`` of them, :func:`expected_distinct` over all ``nnz``) sits
    beside one of the item blocks that reference it, so an item block receives
    ``R_u - N / W`` users on average (the users' part of the count is
    ``sum_u |B(u)| - 1``, exactly what the routes count on the 20M benchmark matrix).
    Memory: interactions of both sides (``16 nnz / W + 8 rows / W``), own factors twice,
    the larger in-block twice, the routes.
    """
    per_block = nnz / workers
    r_items = expected_distinct(n_items, item_exp, per_block)
    r_users = expected_distinct(n_users, user_exp, per_block)
    remote = (workers - 1) / workers
    if layout == "locality":
        users_in = r_users - expected_distinct(n_users, user_exp, nnz) / workers
    else:
        users_in = remote * r_users
    received = (remote * r_items + users_in) * factors * 4
    rows = (n_users + n_items) / workers
    memory = 16 * per_block + 8 * rows + 2 * rows * factors * 4
    memory += 2 * max(r_items, r_users) * factors * 4 + 8 * (r_items + r_users)
    return {"referenced_items": r_items, "referenced_users": r_users}, received, memory


def broadcast_received(n_users, n_items, factors, workers):
    """Bytes into each worker per iteration if every worker received the full other side."""
    return 0.0 if workers == 1 else (1 + 1 / workers) * (n_users + n_items) * factors * 4
