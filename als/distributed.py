"""The same ALS fit on a Dask cluster: interactions in blocks on the workers, factors in futures.

:func:`fit_distributed` trains an :class:`~als.model.AlternatingLeastSquares` on a
``dask.distributed.Client`` and leaves the learned factors in that ordinary model, which then
recommends, saves and loads as usual. With the same parameters and seed its factors are close
to the single-machine fit's but not identical: the Gram matrix is summed here in float64 (in a
fixed tree), there in float32, and the iterations carry that rounding forward. Measured on
ml-100k with 64 factors (``python -m benchmarks.dask_agreement``): the largest factor
difference is 0.4% of the largest factor after 1 iteration, 0.5% after 15 and 2.5% after 150;
ranking metrics at 10 differ by at most 8e-5 after 15 iterations and 7e-4 after 150.

Partitioning
    Items are cut into ``blocks`` contiguous ranges; item block ``c`` is the CSR of its rows
    of the transposed weights. Users are first read in as many contiguous ranges; then
    (``layout="locality"``, the default) each range's owner assigns its users to the user
    blocks with :func:`als.partitioning.locality_assignment`: each user joins one of the
    item blocks it references, so a user whose interactions all fall in one item block
    never travels (15-23% of the users of the 20M power-law benchmark at 2-4 workers),
    under a capacity that keeps every block's work (interactions + 32 per row) within 5%
    of its share. User block ``b``
    holds the sorted ids ``user_ids[b]`` (``layout="ranges"`` keeps the ranges). Block
    ``b`` of both sides lives on worker ``b % W``. The blocks are built on the workers from
    the partitions of a dask DataFrame or Parquet files (each partition is split by range
    on its worker and the pieces moved to the range owners, which send each user block its
    rows), so the whole matrix is never collected on one machine. A scipy CSR matrix is
    accepted for convenience: the client slices it into ranges that travel inside the build
    tasks, and the rest is the same. The client holds the block sizes and, to gather the
    factors at the end, the users' ids (the id map).

Routing (Spark MLlib's in-blocks and out-blocks)
    When the blocks are built, each block's owner computes its out-blocks: for every block
    ``c`` of the other side, the sorted rows of this block that ``c`` references (user ``u``
    goes to item block ``c`` when ``u`` has an interaction with an item of ``c``). A user
    block finds an item's block by its range; it sends each item block the ids of the users
    it routes there, from which the item block learns its out-blocks and the order of its
    user columns. Before solving, each block's columns are renumbered to the rows it
    references (its in-block), in the order the pieces arrive, and its entries keep their
    order. The client keeps only the ``blocks x blocks`` sizes.

One half-iteration (solving users; items are the same with the roles swapped)
    1. ``YtY = sum_c Y_c^T Y_c + lambda I``: one partial per item block on its owner, summed
       by a pairwise tree of tasks (float64, in a fixed order).
    2. Item block ``c`` sends user block ``b`` only the rows of its out-block for ``b``: each
       factor row travels once to each block that references it, never the whole matrix.
    3. Each user block is solved on its owner with the ``cpu`` backend, warm-started from
       its own previous rows, with the item rows it references; the new rows stay there.
       The per-row arithmetic is that of a solve with the full ``Y`` (the same rows, each
       row's entries in the same order), so a layout changes the factors only through the
       Gram matrix's float64 partial sums (measured on the tests' matrices: not at all;
       tests compare layouts with the one-machine tolerances, never bit for bit).

Memory per worker is its interactions, its blocks' factors and the other side's rows its
blocks reference; no worker and not the client ever holds a full factor matrix during the
fit (the client gathers the factors into the model at the end).

Fault tolerance
    Everything on a worker can be recomputed from its lineage, so a worker lost mid-fit costs
    recomputation, not the fit. The blocks of interactions come from tasks (reading a
    partition, or carrying the client's slice). The initial factors are drawn by tasks
    that restart the client's random stream from the state recorded at their first row. A
    lost worker's factor blocks are recomputed from their lineage (back through the
    iterations they depend on), and the Gram tree runs again in the same order: the result
    is bit for bit the same.

Frequency-scaled regularisation (``nu``)
    Each block computes its rows' lambdas, ``lambda (n_u + n_items)^nu``, from its own
    counts and the other side's size, as ``fit`` does from the whole matrix; the Gram
    matrix then carries no lambda. Other model options (``confidence``, ``alpha0``,
    ``init_stddev``) and ``solver="ials++"`` are refused.

Ids
    The user, item and weight columns must hold dense integer ids ``0..n-1``. Raw ids are
    mapped by :func:`encode_ids` (one pass to find each column's sorted unique values, which
    the client then holds: ``8 * (n_users + n_items)`` bytes, then a map over partitions).

Threads
    A solve task uses ``model.num_threads`` Numba threads, or with 0 the worker's thread
    count; run workers with one Dask thread (``threads_per_worker=1``) and give them cores
    through ``num_threads``, as one task runs per block and block ``b`` runs on its owner.

Examples
--------
>>> from dask.distributed import Client, LocalCluster          # doctest: +SKIP
>>> from als import AlternatingLeastSquares                     # doctest: +SKIP
>>> from als.distributed import fit_distributed                 # doctest: +SKIP
>>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
...     model = fit_distributed(client, AlternatingLeastSquares(random_state=0), user_items)
>>> model.recommend(0, user_items[0])                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from als.backends.base import as_int32, get_backend

from .errors import InvalidTypeError, InvalidValueError
from .fitting import (
    ITEMS,
    SIDES,
    USERS,
    SolverSettings,
    add_loss_parts,
    confidence,
    initial_factors,
    normalised_loss,
    solve_side,
)
from .model import AlternatingLeastSquares
from .partitioning import block_bounds, block_of, locality_assignment
from .validation import check_positive_int, check_random_state, check_user_items

__all__ = [
    "BlockedInteractions",
    "partition_interactions",
    "fit_distributed",
    "fit_on_cluster",
    "cluster_client",
    "describe_cluster",
    "encode_ids",
    "initial_factor_states",
]

#: random draws per chunk when the client advances the stream to a block's first row
RANDOM_CHUNK_ELEMENTS = 1 << 22

#: how users are grouped into blocks (see Partitioning)
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
        ``"locality"`` or ``"ranges"`` (see Partitioning in the module docstring).
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


# -- tasks run on the workers -------------------------------------------------------------------


def _csr_from_parts(indptr, indices, data, shape):
    """A user or item block shipped from the client's CSR (its arrays travel in the task)."""
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=shape)


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


def _piece(split, side, block):
    return split[side][block]


def _csr_from_pieces(shape, *pieces):
    """One block's CSR from the pieces every partition sent it; duplicates are summed."""
    rows = np.concatenate([piece[0] for piece in pieces])
    columns = np.concatenate([piece[1] for piece in pieces])
    weights = np.concatenate([piece[2] for piece in pieces])
    return scipy.sparse.csr_matrix((weights, (rows, columns)), shape=shape)


def _solver_block(block, alpha, columns=None):
    """The confidences of one block with its columns renumbered to the rows it references.

    The confidences are exactly those ``fit`` prepares (canonical float32, ``alpha``
    applied), stored in the same order. Column ``j`` of the result is ``columns[j]``, the
    order in which its in-block arrives (see :func:`_select`); by default the ``j``-th
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


def _route_ids(ids, routes, target):
    """The user ids user block sends item block ``target`` (the rows of its route there)."""
    return ids[routes[target]]


def _in_order(*route_ids):
    """An item block's user columns in the order their rows arrive: by user block."""
    if not route_ids:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(route_ids).astype(np.int64)


def _item_routes(block, *route_ids):
    """Out-blocks of an item block, from the user ids every user block sends it.

    Item row ``r`` goes to user block ``b`` when one of its users is among ``route_ids[b]``
    (every user the block references is in exactly one of them).
    """
    columns = _in_order(*route_ids)
    owner = np.repeat(np.arange(len(route_ids)), [len(ids) for ids in route_ids])
    order = np.argsort(columns, kind="stable")
    found = np.minimum(np.searchsorted(columns[order], block.indices), max(len(columns) - 1, 0))
    target = owner[order[found]] if len(columns) else np.zeros(0, dtype=np.int64)
    return _routes_to(block, target, len(route_ids))


def _assign(block, item_bounds, n_blocks):
    return locality_assignment(block, item_bounds, n_blocks)


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


def _part(pair, index):
    return pair[index]


def _id_range(start, stop):
    return np.arange(start, stop, dtype=np.int64)


def _length(array):
    return len(array)


def _route_sizes(routes):
    return np.array([len(rows) for rows in routes], dtype=np.int64)


def _select(factors, routes, target):
    """The rows of one factor block that block ``target`` of the other side references."""
    return np.ascontiguousarray(factors[routes[target]])


def _random_rows(states, chunk_rows, n_rows, ids, factors, dtype):
    """Rows ``ids`` (sorted) of the initial factors, drawn chunk by chunk from the stream.

    ``states[k]`` is the client's stream at row ``k * chunk_rows``: each chunk holding one
    of ``ids`` is drawn whole from a copy of it, so the rows are those of one draw of all
    ``n_rows`` rows.
    """
    result = np.empty((len(ids), factors), dtype=dtype)
    chunk_of = ids // chunk_rows
    for k in np.unique(chunk_of):
        state = states[k]
        generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
        generator.bit_generator.state = state
        start = int(k) * chunk_rows
        rows = initial_factors(generator, min(chunk_rows, n_rows - start), factors, dtype)
        chosen = chunk_of == k
        result[chosen] = rows[ids[chosen] - start]
    return result


def _gram_partial(factors):
    rows = factors.astype(np.float64)
    return rows.T @ rows


def _add(a, b):
    return a + b


def _finish_gram(total, regularization, dtype):
    # the same expression as the backends' gram, applied to the summed partials
    gram = total.astype(dtype)
    return gram + np.asarray(regularization, dtype=dtype) * np.eye(len(gram), dtype=dtype)


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


def _copy_rows(rows):
    return np.array(rows, order="C")


def _thread_count(num_threads):
    if num_threads:
        return num_threads
    try:
        from distributed import get_worker

        return max(1, get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return 0


def _row_lambdas(raw, settings):
    """Per-row lambdas of one block (``nu``), from its own counts and the other side's size.

    ``raw`` is the block's weights with every column of the other side (users x all items,
    or items x all users), as ``AlternatingLeastSquares.fit`` computes them from the whole
    matrix; None without ``nu``.
    """
    return settings.row_regularization(check_user_items(raw, "a block"))


def _solve_block(block, own, gram, cg_steps, num_threads, where, lambdas, *pieces):
    """New factors for one block's rows given the other side's rows it references."""
    backend = get_backend("cpu", _thread_count(num_threads))
    # a copy: ``own`` is the previous half-iteration's block and must stay as it was
    rows = np.array(own, order="C")
    other = _in_block(block, pieces, rows.shape[1], rows.dtype)
    iteration, side = where
    with backend.threads():
        solve_side(backend, block, rows, other, gram, cg_steps, iteration, side, lambdas)
    return rows


def _loss_parts(block, rows, gram64, n_columns, num_threads, lambdas, *pieces):
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
    return parts, _squares(rows, lambdas)


# -- partitioning -------------------------------------------------------------------------------


#: seconds to wait for a worker when the cluster has none (starting, or restarting one)
WORKER_WAIT_SECONDS = 60


def _workers(client):
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            raise InvalidValueError(
                f"the Dask cluster has no workers (waited {WORKER_WAIT_SECONDS} s for one)"
            ) from None
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    return workers


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
    owners = _workers(client)
    blocks = check_positive_int(blocks if blocks is not None else len(owners), "blocks")
    if scipy.sparse.issparse(user_items) or isinstance(user_items, np.ndarray):
        data = _partition_matrix(client, check_user_items(user_items), blocks, owners)
        return _arranged(client, data, layout)
    if isinstance(user_items, (str, os.PathLike, list, tuple)):
        import dask.dataframe as dd

        columns = [c for c in (user_col, item_col, weight_col) if c is not None]
        user_items = dd.read_parquet(user_items, columns=columns)
    if not hasattr(user_items, "to_delayed"):
        raise InvalidTypeError(
            "user_items must be a scipy.sparse matrix, a dask DataFrame or Parquet path(s), "
            f"not {type(user_items).__name__}"
        )
    data = _partition_frame(
        client, user_items, (user_col, item_col, weight_col), shape, blocks, owners
    )
    return _arranged(client, data, layout)


def _owner(owners, block):
    return owners[block % len(owners)]


def _partition_matrix(client, matrix, blocks, owners):
    n_users, n_items = matrix.shape
    user_bounds, item_bounds = block_bounds(n_users, blocks), block_bounds(n_items, blocks)
    transposed = matrix.T.tocsr()
    # the blocks travel inside their tasks on purpose: the scheduler keeps them, so a lost
    # worker's blocks are rebuilt (so Dask's "Sending large graph" warning is expected)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph", category=UserWarning)
        sides = _submit_matrix_blocks(client, matrix, transposed, user_bounds, item_bounds, owners)
    return BlockedInteractions(
        n_users, n_items, user_bounds, item_bounds, sides[0], sides[1], owners, nnz=matrix.nnz
    )


def _submit_matrix_blocks(client, matrix, transposed, user_bounds, item_bounds, owners):
    sides = []
    for source, bounds in ((matrix, user_bounds), (transposed, item_bounds)):
        futures = []
        for b in range(len(bounds) - 1):
            part = source[bounds[b] : bounds[b + 1]]
            futures.append(
                client.submit(
                    _csr_from_parts,
                    part.indptr,
                    part.indices,
                    part.data,
                    part.shape,
                    workers=[_owner(owners, b)],
                    allow_other_workers=True,
                    pure=False,
                )
            )
        sides.append(futures)
    return sides


def _partition_frame(client, frame, columns, shape, blocks, owners):
    import dask

    user_col, item_col, _ = columns
    if shape is None:
        largest = dask.compute(frame[user_col].max(), frame[item_col].max())
        shape = (int(largest[0]) + 1, int(largest[1]) + 1)
    n_users, n_items = (check_positive_int(n, "shape") for n in shape)
    user_bounds, item_bounds = block_bounds(n_users, blocks), block_bounds(n_items, blocks)
    splits = client.compute(
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
            where = {"workers": [_owner(owners, b)], "allow_other_workers": True}
            pieces = [client.submit(_piece, split, side, b, **where) for split in splits]
            rows = int(bounds[b + 1] - bounds[b])
            futures.append(
                client.submit(_csr_from_pieces, (rows, columns_of_side), *pieces, **where)
            )
        sides.append(futures)
    nnz = sum(client.gather([client.submit(_nnz, block) for block in sides[0]]))
    return BlockedInteractions(
        n_users, n_items, user_bounds, item_bounds, sides[0], sides[1], owners, nnz=nnz
    )


def _nnz(block):
    return block.nnz


def _arranged(client, data, layout):
    """Regroup the users (``layout="locality"``), then compute the routes, on the workers.

    ``data`` holds users in contiguous ranges. With ``"locality"`` each range's owner
    assigns its users to blocks (:func:`als.partitioning.locality_assignment`: its share
    of every block's capacity) and sends each block its rows; block ``b`` stacks them in
    the order of the ranges, so its ids stay sorted. The client learns the block sizes.
    """
    n_blocks = len(data.user_bounds) - 1
    data.layout = layout

    def on_owner(function, *args, block):
        where = [_owner(data.owners, block)]
        return client.submit(function, *args, workers=where, allow_other_workers=True)

    ranges = data.user_bounds
    if layout == "ranges" or n_blocks == 1:
        data.user_ids = [
            on_owner(_id_range, int(ranges[b]), int(ranges[b + 1]), block=b)
            for b in range(n_blocks)
        ]
    else:
        assignments = [
            on_owner(_assign, block, data.item_bounds, n_blocks, block=s)
            for s, block in enumerate(data.user_blocks)
        ]
        stacked = []
        for b in range(n_blocks):
            pieces = [
                on_owner(_rows_to, data.user_blocks[s], assignment, b, int(ranges[s]), block=s)
                for s, assignment in enumerate(assignments)
            ]
            stacked.append(on_owner(_stack_rows, *pieces, block=b))
        data.user_blocks = [on_owner(_part, pair, 0, block=b) for b, pair in enumerate(stacked)]
        data.user_ids = [on_owner(_part, pair, 1, block=b) for b, pair in enumerate(stacked)]
        sizes = client.gather(
            [on_owner(_length, ids, block=b) for b, ids in enumerate(data.user_ids)]
        )
        data.user_bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return _with_routes(client, data, on_owner)


def _with_routes(client, data, on_owner):
    """Compute every block's out-blocks on its owner, once; the client keeps their sizes.

    User blocks find the item block of each column by its range. Each then sends every
    item block the ids of the users it routes there, from which the item block learns
    its columns' order and its own out-blocks.
    """
    n_blocks = len(data.user_bounds) - 1
    data.user_routes = [
        on_owner(_out_routes, block, data.item_bounds, block=b)
        for b, block in enumerate(data.user_blocks)
    ]
    route_ids = [
        [
            on_owner(_route_ids, data.user_ids[b], data.user_routes[b], c, block=b)
            for b in range(n_blocks)
        ]
        for c in range(n_blocks)
    ]
    data.item_columns = [on_owner(_in_order, *ids, block=c) for c, ids in enumerate(route_ids)]
    data.item_routes = [
        on_owner(_item_routes, block, *route_ids[c], block=c)
        for c, block in enumerate(data.item_blocks)
    ]
    for side, routes in ((USERS, data.user_routes), (ITEMS, data.item_routes)):
        sizes = client.gather([on_owner(_route_sizes, r, block=b) for b, r in enumerate(routes)])
        data.route_sizes[side.name] = np.stack(sizes)
    return data


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


# -- initial factors ----------------------------------------------------------------------------


def initial_factor_states(rng, bounds, factors, dtype):
    """Bit-generator states at the first row of each block of ``bounds``, advancing ``rng``.

    Drawing the blocks from these states gives exactly ``rng.random((bounds[-1], factors))``:
    NumPy draws each value from the stream in order, whatever the size of the calls. The
    client advances ``rng`` in chunks of ``RANDOM_CHUNK_ELEMENTS`` values, so it holds one
    chunk (16 MiB in float32), never the factors.
    """
    rows_per_chunk = max(1, RANDOM_CHUNK_ELEMENTS // factors)
    scratch = np.empty((rows_per_chunk, factors), dtype=dtype)
    states = []
    for b in range(len(bounds) - 1):
        states.append(copy.deepcopy(rng.bit_generator.state))
        for start in range(int(bounds[b]), int(bounds[b + 1]), rows_per_chunk):
            rows = min(rows_per_chunk, int(bounds[b + 1]) - start)
            rng.random(out=scratch[:rows], dtype=dtype)
    return states


# -- the fit ------------------------------------------------------------------------------------


def _tree_sum(client, partials, owners):
    """Sum futures pairwise, neighbours first, so the order never depends on the workers."""
    level = list(partials)
    while len(level) > 1:
        pairs = []
        for b in range(0, len(level) - 1, 2):
            where = {"workers": [_owner(owners, b)], "allow_other_workers": True}
            pairs.append(client.submit(_add, level[b], level[b + 1], **where))
        if len(level) % 2:
            pairs.append(level[-1])
        level = pairs
    return level[0]


def fit_distributed(client, model, user_items, *, show_progress=True, callback=None, **options):
    """Fit ``model`` on a Dask cluster and return it, with its factors gathered.

    The model's parameters mean what they mean in ``model.fit`` and are checked by the
    same code; the workers solve with the ``cpu`` backend whatever ``model.backend`` is,
    and the gathered factors are put on the model's backend. Factors the model already has
    with the right shapes are the starting point, as in ``fit``; each block of them goes to
    its owner inside its task. Each half-iteration a block receives only the other side's
    rows it references (see Routing in the module docstring).

    Parameters
    ----------
    client : distributed.Client
    model : AlternatingLeastSquares
        Parameters of the fit; receives the factors.
    user_items : scipy.sparse matrix, dask DataFrame, Parquet path(s) or BlockedInteractions
        The interactions (see :func:`partition_interactions`), or blocks already on the
        workers.
    show_progress : bool
        Show a progress bar.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, seconds, loss)``.
    **options
        ``shape``, ``blocks``, ``user_col``, ``item_col``, ``weight_col``: passed to
        :func:`partition_interactions` (unused for ``BlockedInteractions``).

    Returns
    -------
    AlternatingLeastSquares
        ``model``, fitted.

    Raises
    ------
    TypeError, ValueError
        For bad parameters or input.
    ModelFitError
        When the factors stop being finite.
    """
    if not isinstance(model, AlternatingLeastSquares):
        raise InvalidTypeError(
            f"model must be an AlternatingLeastSquares, not {type(model).__name__}"
        )
    # the workers train with the 'cpu' backend, whatever the model's own backend is
    settings = SolverSettings.from_model(model, get_backend("cpu"))
    if (
        settings.confidence != "implicit"
        or settings.alpha0 != 1.0
        or settings.init_stddev is not None
    ):
        raise InvalidValueError(
            "fit_distributed supports implicit's model and nu only: leave confidence, "
            "alpha0 and init_stddev at their defaults, or fit on one machine"
        )
    if settings.block_size is not None:
        raise InvalidValueError("solver='ials++' is not supported by the Dask fit: use 'cg'")
    owned = not isinstance(user_items, BlockedInteractions)
    if owned:
        user_items = partition_interactions(client, user_items, **options)
    data = user_items
    owners = data.owners
    threads = model.num_threads
    n_blocks = len(data.user_bounds) - 1

    def on_owner(function, *args, block):
        return client.submit(
            function, *args, workers=[_owner(owners, block)], allow_other_workers=True
        )

    routes = {USERS: data.user_routes, ITEMS: data.item_routes}
    ids = {
        USERS: data.user_ids,
        ITEMS: [
            on_owner(_id_range, int(data.item_bounds[c]), int(data.item_bounds[c + 1]), block=c)
            for c in range(n_blocks)
        ],
    }
    blocks = {
        USERS: [
            on_owner(_solver_block, x, settings.alpha, block=b)
            for b, x in enumerate(data.user_blocks)
        ],
        ITEMS: [
            on_owner(_solver_block, y, settings.alpha, columns, block=c)
            for c, (y, columns) in enumerate(zip(data.item_blocks, data.item_columns, strict=True))
        ],
    }
    # per-row lambdas (nu), each block's from its own counts, or None
    lambdas = {
        side: [
            on_owner(_row_lambdas, raw, settings, block=b) if settings.nu else None
            for b, raw in enumerate(raws)
        ]
        for side, raws in ((USERS, data.user_blocks), (ITEMS, data.item_blocks))
    }
    if owned:
        # the solver blocks replace the weights: the workers free them once those are
        # built, and the scheduler keeps their lineage in case a worker is lost
        data.user_blocks = data.item_blocks = None
    sizes = {USERS: data.n_users, ITEMS: data.n_items}
    factors = _starting_factors(client, model, settings, ids, sizes, owners)
    partials = {
        side: [on_owner(_gram_partial, x, block=b) for b, x in enumerate(factors[side])]
        for side in SIDES
    }

    def in_block(side, b):
        """Pieces of the other side's factors that block ``b`` of ``side`` references."""
        other = side.other
        sizes = data.route_sizes[other.name]
        return [
            on_owner(_select, factors[other][c], routes[other][c], b, block=c)
            for c in range(n_blocks)
            if sizes[c, b]
        ]

    def half_iteration(iteration, side):
        gram = client.submit(
            _finish_gram,
            _tree_sum(client, partials[side.other], owners),
            settings.gram_regularization,
            settings.dtype,
        )
        factors[side] = [
            on_owner(
                _solve_block,
                blocks[side][b],
                factors[side][b],
                gram,
                settings.cg_steps,
                threads,
                (iteration, side),
                lambdas[side][b],
                *in_block(side, b),
                block=b,
            )
            for b in range(n_blocks)
        ]
        partials[side] = [on_owner(_gram_partial, x, block=b) for b, x in enumerate(factors[side])]

    def loss():
        """implicit's normalised training loss, from per-block parts summed on the client."""
        gram64 = _tree_sum(client, partials[ITEMS], owners)
        parts = client.gather(
            [
                on_owner(
                    _loss_parts,
                    blocks[USERS][b],
                    factors[USERS][b],
                    gram64,
                    data.n_items,
                    threads,
                    lambdas[USERS][b],
                    *in_block(USERS, b),
                    block=b,
                )
                for b in range(n_blocks)
            ]
        )
        item_squares = client.gather(
            [
                on_owner(_squares, y, lambdas[ITEMS][c], block=c)
                for c, y in enumerate(factors[ITEMS])
            ]
        )
        loss_parts, user_squares = zip(*parts, strict=True)
        squared_norms = sum(user_squares) + sum(item_squares)
        # with per-row lambdas the penalties already carry them
        regularization = settings.loss_regularization if settings.nu == 0.0 else 1.0
        return normalised_loss(add_loss_parts(loss_parts), squared_norms, regularization)

    from distributed import wait

    current_loss = None
    callback = callback or model.fit_callback
    start = time.perf_counter()
    with tqdm(total=settings.iterations, disable=not show_progress) as bar:
        for iteration in range(settings.iterations):
            for side in SIDES:
                half_iteration(iteration, side)
            wait([future for side in SIDES for future in factors[side] + partials[side]])
            bar.update(1)
            if settings.calculate_training_loss:
                current_loss = loss()
                bar.set_postfix({"loss": f"{current_loss:.6f}"})
            if callback:
                callback(iteration, time.perf_counter() - start, current_loss)
            start = time.perf_counter()
    for side in SIDES:
        gathered = np.empty((sizes[side], settings.factors), dtype=settings.dtype)
        for rows, block in zip(client.gather(ids[side]), client.gather(factors[side]), strict=True):
            gathered[rows] = block
        setattr(model, side.factors_name, gathered)
    return model


def _starting_factors(client, model, settings, ids_by_side, sizes, owners):
    """Futures of both sides' starting factor blocks: the model's own, or drawn by block.

    Follows ``AlternatingLeastSquares.fit``: a side with factors of the right shape keeps
    them; a missing side is drawn from ``random_state``, user factors first. Block ``b``
    (the rows ``ids_by_side[side][b]``, a future on its owner) is made on its owner and
    never leaves it.
    """
    dtype, factors, rng = settings.dtype, settings.factors, None
    chunk_rows = max(1, RANDOM_CHUNK_ELEMENTS // factors)
    blocks = {}
    for side, ids in ids_by_side.items():
        current = getattr(model, side.factors_name)
        rows = sizes[side]
        where = [
            {"workers": [_owner(owners, b)], "allow_other_workers": True} for b in range(len(ids))
        ]
        if current is None:
            rng = rng or check_random_state(model.random_state)
            chunks = np.append(np.arange(0, rows, chunk_rows), rows)
            states = initial_factor_states(rng, chunks, factors, dtype)
            blocks[side] = [
                client.submit(
                    _random_rows, states, chunk_rows, rows, block_ids, factors, dtype, **where[b]
                )
                for b, block_ids in enumerate(ids)
            ]
        elif current.shape == (rows, factors):
            array = np.ascontiguousarray(current, dtype=dtype)
            # the rows travel inside their tasks: the scheduler keeps them for a lost worker
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="Sending large graph", category=UserWarning
                )
                blocks[side] = [
                    client.submit(_copy_rows, array[block_ids], pure=False, **where[b])
                    for b, block_ids in enumerate(client.gather(ids))
                ]
        else:
            raise InvalidValueError(
                f"the interactions need {side.factors_name} of shape {(rows, factors)} but "
                f"the model already has {tuple(current.shape)}; fit a new model or set "
                f"{side.factors_name} = None to start again"
            )
    return blocks


def _squares(factors, lambdas=None):
    backend = get_backend("cpu")
    if lambdas is None:
        return backend.squared_norm(factors)
    return backend.squared_norm(factors, lambdas)


@contextlib.contextmanager
def cluster_client(workers=None, scheduler=None, memory_limit="auto"):
    """A ``Client`` of a new ``LocalCluster`` of ``workers`` processes, or of ``scheduler``.

    Local workers run one Dask thread each (see Threads above); the cluster closes on exit.
    """
    if bool(workers) == bool(scheduler):
        raise InvalidValueError("give either workers (a local cluster) or scheduler (an address)")
    if workers:
        check_positive_int(workers, "workers")
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def fit_on_cluster(model, user_items, *, workers=None, scheduler=None, log=None, **options):
    """Fit on a new ``LocalCluster`` of ``workers`` processes, or on the cluster at ``scheduler``.

    ``options`` go to :func:`fit_distributed`; ``log`` (e.g. ``print``) hears one line about
    the cluster. Returns the fitted ``model``.
    """
    with cluster_client(workers, scheduler) as client:
        if log:
            log(describe_cluster(client, workers, scheduler))
        return fit_distributed(client, model, user_items, **options)


def describe_cluster(client, workers=None, scheduler=None):
    """One line about the cluster a ``Client`` of :func:`cluster_client` is on."""
    where = scheduler or f"a local cluster of {workers} worker processes"
    return f"fitting on {where} ({len(_workers(client))} workers)"
