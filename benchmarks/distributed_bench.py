"""The Dask fit's traffic and memory per worker against worker count, and a comparison with Spark.

Usage::

    python -m benchmarks.distributed_bench traffic --nnz 20000000 --workers 1 2 4 --out DIR
    python -m benchmarks.distributed_bench routes --nnz 20000000 --workers 1 2 4 8 16 --out DIR
    python -m benchmarks.distributed_bench spark --data ml-1m --out DIR   # needs pyspark
    python -m benchmarks.distributed_bench estimate --nnz 1000000000 --factors 64

``traffic``: writes a power-law matrix as Parquet files, and for every worker count starts a
``LocalCluster`` (processes, one Dask thread and one Numba thread per worker) whose workers
read the files and build the blocks (:func:`als.distributed.partition_interactions`), then
fits with :func:`als.distributed.fit_distributed`. Per worker and iteration it records the
bytes received from other workers (the worker's ``transfer_incoming_log``), and per worker
the peak resident memory while fitting (a thread samples RSS every 20 ms after the blocks
are built). Both are set beside the formula of the blocked exchange, from the routes:

    bytes into worker w per iteration, solving both sides S:
        sum over w's blocks b of S, over blocks c of the other side owned elsewhere:
            route_sizes[other][c, b] * f * 4        (only the rows b references)
        + Gram partials and matrices, a few f^2 * 8 bytes
    memory of worker w while fitting, beyond an idle worker's:
        its blocks' interactions (CSR: 8 B per entry + 8 B per row, both sides)
        + its factor rows (old and new: 2 * rows * f * 4)
        + the other side's rows its blocks reference (pieces and in-block: 2 * refs * f * 4)
        + the out-block row lists (8 B per routed row)

and beside the broadcast design it replaced (every worker received the full other side:
``(1 + 1/W) (n_users + n_items) f 4`` per iteration). The one-machine fit on all cores is
timed on the same matrix.

``traffic --layout ranges`` measures users in ranges of ids, the layout before the
locality-aware assignment (the default, ``locality``).

``routes``: no cluster; counts exactly, from the matrix, the factor rows every worker would
receive per iteration (:func:`als.partitioning.received_rows`) for both layouts and any
number of workers, with the blocks' balance.

``spark``: one data set, one split (``als.evaluation.train_test_split``), three engines:
our one-machine fit, our Dask fit (2 workers) and Spark MLlib's ALS in local mode
(``implicitPrefs=True``), same rank, iterations and confidence, with seconds per iteration
and NDCG@10 on the held-out interactions from the same evaluation code (Spark's factors are
put into an ``AlternatingLeastSquares``). Parameter mapping: Spark's confidence is
``1 + alpha_s * r``; ours is ``alpha * w``, so we train on weights ``w = 1 + alpha_s * r``
with ``alpha = 1`` (identical confidences). Spark regularises row ``u`` by
``regParam * n_u`` (ALS-WR, ``n_u`` its interactions), ours by a constant ``lambda``; no
constant reproduces it, so Spark gets ``regParam = lambda / mean(n_u)`` (the same penalty
for a user with the mean number of interactions) and, as a second run, the same
``regParam = lambda``; ours runs once more with ``lambda * mean(n_u)``, Spark's mean penalty
at ``regParam = lambda``.

Each command rewrites its JSON and markdown after every row, so a long run leaves results.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from als import AlternatingLeastSquares
from als.distributed import fit_distributed, partition_interactions
from als.partitioning import ROW_COST, block_bounds, block_of, received_rows, user_blocks
from benchmarks.common import machine_info, machine_slug, power_law_matrix, utc_now, versions

MIB = 2**20

# -- measured on the workers ---------------------------------------------------------------------


def _rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _start_sampling(dask_worker):
    """On a worker: free what can be freed, then track the peak RSS every 20 ms.

    The state lives on the worker object: this module may be pickled by value (``-m``).
    """
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    peak = {"rss": _rss(), "start": _rss(), "running": True}
    dask_worker.als_bench_peak = peak

    def sample():
        while peak["running"]:
            peak["rss"] = max(peak["rss"], _rss())
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()


def _stop_sampling(dask_worker):
    peak = dask_worker.als_bench_peak
    peak["running"] = False
    return {"peak": max(peak["rss"], _rss()), "start": peak["start"]}


def _warm_up():
    """Import what a solve needs (and compile or load Numba's cache) before measuring."""
    import dask.dataframe  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from als.backends.base import get_backend

    get_backend("cpu", 1)
    return _rss()


def _received(dask_worker):
    total = sum(entry["total"] for entry in dask_worker.transfer_incoming_log)
    dask_worker.transfer_incoming_log.clear()
    return total


# -- formulas -------------------------------------------------------------------------------------


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
    """Bytes into each worker per iteration in the broadcast design this one replaced."""
    return 0.0 if workers == 1 else (1 + 1 / workers) * (n_users + n_items) * factors * 4


# -- traffic and memory --------------------------------------------------------------------------


def write_parquet(user_items, folder, files=8):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    coo = user_items.tocoo()
    for part, rows in enumerate(np.array_split(np.arange(coo.nnz), files)):
        table = pa.table({"user": coo.row[rows], "item": coo.col[rows], "weight": coo.data[rows]})
        pq.write_table(table, folder / f"part{part:03d}.parquet")
    return folder


def run_workers(workers, folder, shape, params, iterations, layout="locality"):
    import dask
    from distributed import Client, LocalCluster, wait

    # no work stealing: every task runs on the worker its block lives on, so what a worker
    # receives is what the routes send (with stealing, an idle worker may take a solve and
    # fetch its block; measured at 8 workers on 2 cores: up to twice the routes' bytes)
    with (
        dask.config.set({"distributed.scheduler.work-stealing": False}),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=0,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        idle = client.run(_warm_up)
        started = time.perf_counter()
        blocked = partition_interactions(client, str(folder), shape=shape, layout=layout)
        wait(blocked.user_blocks + blocked.item_blocks + blocked.user_routes + blocked.item_routes)
        build_seconds = time.perf_counter() - started
        nnz_by_block = {
            side: client.gather([client.submit(lambda m: m.nnz, block) for block in blocks])
            for side, blocks in (("users", blocked.user_blocks), ("items", blocked.item_blocks))
        }
        predicted = predicted_received(blocked, params["factors"])
        memory = predicted_memory(blocked, nnz_by_block, params["factors"])
        client.run(_received)
        client.run(_start_sampling)
        seconds, received = [], []

        def record(iteration, elapsed, loss):
            seconds.append(elapsed)
            received.append(client.run(_received))

        model = AlternatingLeastSquares(**params, iterations=iterations)
        fit_distributed(client, model, blocked, show_progress=False, callback=record)
        peaks = client.run(_stop_sampling)
    per_worker = []
    for address in sorted(idle):
        steady = [r[address] for r in received[1:]] or [received[0][address]]
        per_worker.append(
            {
                "idle_rss_mib": idle[address] / MIB,
                "fit_start_rss_mib": peaks[address]["start"] / MIB,
                "peak_rss_mib": peaks[address]["peak"] / MIB,
                "predicted_data_mib": memory[address] / MIB,
                "received_mib_per_iteration": statistics.median(steady) / MIB,
                "predicted_received_mib": predicted[address] / MIB,
            }
        )
    return model, seconds, per_worker, build_seconds


def run_single(user_items, params, iterations):
    seconds = []
    model = AlternatingLeastSquares(**{**params, "num_threads": 0}, iterations=iterations)
    model.fit(user_items, show_progress=False, callback=lambda i, s, loss: seconds.append(s))
    return model, seconds


def traffic(args):
    user_items = power_law_matrix(args.users, args.items, args.nnz)
    n_users, n_items = user_items.shape
    print(f"matrix {n_users:,} x {n_items:,}, {user_items.nnz:,} nnz, {args.factors} factors")
    folder = write_parquet(user_items, args.parquet or Path("/tmp/als-distributed-bench"))
    params = {"factors": args.factors, "random_state": 0, "backend": "cpu", "num_threads": 1}
    result = header(args, "distributed traffic and memory")
    result.update(
        matrix={"users": n_users, "items": n_items, "nnz": int(user_items.nnz)},
        factors=args.factors,
        iterations=args.iterations,
        distributed=[],
    )
    single, single_seconds = run_single(user_items, params, args.iterations)
    result["single_machine"] = {
        "threads": "all cores",
        "seconds_per_iteration": statistics.median(single_seconds[1:] or single_seconds),
        "iteration_seconds": single_seconds,
    }
    save(args, result, "traffic", traffic_markdown)
    for workers in args.workers:
        model, seconds, per_worker, build = run_workers(
            workers, folder, (n_users, n_items), params, args.iterations, args.layout
        )
        difference = float(
            np.abs(model.item_factors - single.item_factors).max()
            / np.abs(single.item_factors).max()
        )
        row = {
            "workers": workers,
            "layout": args.layout,
            "blocks": workers,
            "build_seconds": build,
            "seconds_per_iteration": statistics.median(seconds[1:] or seconds),
            "iteration_seconds": seconds,
            "per_worker": per_worker,
            "broadcast_design_received_mib": broadcast_received(
                n_users, n_items, args.factors, workers
            )
            / MIB,
            "max_difference_vs_single_machine": difference,
        }
        result["distributed"].append(row)
        print(json.dumps(row, indent=1))
        save(args, result, "traffic", traffic_markdown)
    return result


def traffic_markdown(result):
    matrix, machine = result["matrix"], result["machine"]
    lines = [
        "# Distributed fit: traffic and memory per worker against worker count",
        "",
        f"`{result['command']}` on {machine['node']} ({machine['processor']}, "
        f"{machine['cpu_count']} cores), {result['date']}.",
        "",
        f"Power-law matrix {matrix['users']:,} users x {matrix['items']:,} items, "
        f"{matrix['nnz']:,} interactions, {result['factors']} factors, CG 3 steps, read from "
        "Parquet files by the workers; LocalCluster of worker processes with one Dask thread "
        "and one Numba thread each, one block per worker and side (users grouped by the "
        "`layout` named in each row, items in ranges). Medians over iterations "
        "2..n. Received: bytes from other workers per iteration (measured), next to the "
        "rows the routes send (formula, without the few-KiB Gram matrices) and to what the "
        "broadcast design sent. Memory: peak RSS while fitting, the RSS when the fit "
        "started (blocks built), and the formula's data (interactions, own factors twice, "
        "referenced rows twice, routes) for comparison with peak minus idle.",
        "",
        "| engine | s / iteration | worker | received MiB / it. | formula MiB "
        "| broadcast design MiB | idle RSS MiB | RSS at fit start | peak RSS MiB "
        "| formula data MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    single = result.get("single_machine")
    if single:
        lines.append(
            f"| one machine, all cores | {single['seconds_per_iteration']:.2f} "
            "| - | - | - | - | - | - | - | - |"
        )
    for row in result["distributed"]:
        for w, worker in enumerate(row["per_worker"]):
            engine = (
                f"Dask, {row['workers']} worker(s), {row.get('layout', 'ranges')} (factors within "
                f"{row['max_difference_vs_single_machine']:.0e})"
                if w == 0
                else ""
            )
            speed = f"{row['seconds_per_iteration']:.2f}" if w == 0 else ""
            lines.append(
                f"| {engine} | {speed} | {w} | {worker['received_mib_per_iteration']:.1f} "
                f"| {worker['predicted_received_mib']:.1f} "
                f"| {row['broadcast_design_received_mib']:.1f} "
                f"| {worker['idle_rss_mib']:.0f} | {worker['fit_start_rss_mib']:.0f} "
                f"| {worker['peak_rss_mib']:.0f} | {worker['predicted_data_mib']:.0f} |"
            )
    lines += footer(result)
    return "\n".join(lines)


# -- routed rows, counted ------------------------------------------------------------------------


def count_routes(user_items, workers, layout):
    """Rows each worker receives per iteration and the blocks' balance, for one layout.

    Counted from the matrix with :mod:`als.partitioning` (the same assignment the workers
    make), one block per worker and side; no cluster runs.
    """
    n_users, n_items = user_items.shape
    started = time.perf_counter()
    users = user_blocks(user_items, workers, layout)
    seconds = time.perf_counter() - started
    items = block_of(np.arange(n_items), block_bounds(n_items, workers))
    rows = received_rows(user_items, users, items, workers)
    degree = np.diff(user_items.indptr)
    item_degree = np.bincount(user_items.indices, minlength=n_items)
    per_worker = rows["users"] + rows["items"]
    share = user_items.nnz / workers

    def imbalance(weights, blocks, total):
        return float(np.bincount(blocks, weights=weights, minlength=workers).max() / total)

    return {
        "workers": workers,
        "layout": layout,
        "assignment_seconds": seconds,
        "received_rows_max": int(per_worker.max()),
        "received_rows_mean": float(per_worker.mean()),
        "received_user_rows_mean": float(rows["users"].mean()),
        "received_item_rows_mean": float(rows["items"].mean()),
        "user_block_nnz_imbalance": imbalance(degree, users, share),
        "user_block_rows_imbalance": imbalance(None, users, n_users / workers),
        "user_block_work_imbalance": imbalance(
            degree + ROW_COST, users, (user_items.nnz + ROW_COST * n_users) / workers
        ),
        "item_block_nnz_imbalance": imbalance(item_degree, items, share),
        "users_never_sent": n_users - len(np.unique(_sent_users(user_items, users, items))),
    }


def _sent_users(user_items, users, items):
    rows = np.repeat(np.arange(user_items.shape[0]), np.diff(user_items.indptr))
    remote = users[rows] != items[user_items.indices]
    return rows[remote]


def routes(args):
    user_items = power_law_matrix(args.users, args.items, args.nnz)
    n_users, n_items = user_items.shape
    print(f"matrix {n_users:,} x {n_items:,}, {user_items.nnz:,} nnz, {args.factors} factors")
    result = header(args, "routed rows counted")
    result.update(
        matrix={"users": n_users, "items": n_items, "nnz": int(user_items.nnz)},
        factors=args.factors,
        rows=[],
    )
    for workers in args.workers:
        for layout in ("ranges", "locality"):
            row = count_routes(user_items, workers, layout)
            row["received_mib_mean"] = row["received_rows_mean"] * args.factors * 4 / MIB
            row["received_mib_max"] = row["received_rows_max"] * args.factors * 4 / MIB
            result["rows"].append(row)
            print(json.dumps(row))
            save(args, result, "routes", routes_markdown)
    return result


def routes_markdown(result):
    matrix, machine = result["matrix"], result["machine"]
    lines = [
        "# Distributed fit: factor rows each worker receives per iteration, counted",
        "",
        f"`{result['command']}` on {machine['node']}, {result['date']}.",
        "",
        f"Power-law matrix {matrix['users']:,} users x {matrix['items']:,} items, "
        f"{matrix['nnz']:,} interactions (`power_law_matrix`, seed 0), one block per worker "
        "and side, items in contiguous ranges of ids. Counted exactly from the matrix by "
        "`als.partitioning.received_rows` (no fit): the user rows and item rows a worker "
        "receives per iteration from other workers, for users in ranges of ids (`ranges`) "
        "and for the locality-aware assignment (`locality`, each user joins one of the item "
        f"blocks it references). MiB at {result['factors']} factors (`rows * f * 4`). "
        "Imbalance: the largest block's work (interactions + "
        f"{ROW_COST} per row, what its solve takes), interactions and rows over the mean.",
        "",
        "| workers | layout | received rows / worker (mean) | of them users | max worker "
        "| MiB / worker / it. (mean) | users never sent | user blocks: work, nnz, rows "
        "imbalance | item blocks: nnz imbalance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['workers']} | {row['layout']} | {row['received_rows_mean']:,.0f} "
            f"| {row['received_user_rows_mean']:,.0f} | {row['received_rows_max']:,} "
            f"| {row['received_mib_mean']:.1f} | {row['users_never_sent']:,} "
            f"| {row['user_block_work_imbalance']:.3f}, {row['user_block_nnz_imbalance']:.3f}, "
            f"{row['user_block_rows_imbalance']:.3f} "
            f"| {row['item_block_nnz_imbalance']:.3f} |"
        )
    lines += footer(result)
    return "\n".join(lines)


# -- against Spark -------------------------------------------------------------------------------


def spark_fit(args, train, reg_param):
    """Spark MLlib's implicit ALS on ``train`` (raw ratings) in ``--spark-python``'s venv.

    Returns an ``AlternatingLeastSquares`` holding Spark's factors, and its timings.
    """
    import subprocess
    import tempfile

    coo = train.tocoo()
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "train.npz", Path(folder) / "factors.npz"
        np.savez(source, row=coo.row, col=coo.col, data=coo.data, shape=np.array(train.shape))
        command = [str(args.spark_python), str(Path(__file__).with_name("spark_als.py"))]
        command += [str(source), str(target), "--factors", str(args.factors)]
        command += ["--iterations", str(args.iterations), "--reg-param", repr(reg_param)]
        command += ["--alpha", repr(args.alpha), "--cores", str(args.cores)]
        subprocess.run(command, check=True)
        found = np.load(target)
        model = AlternatingLeastSquares(factors=args.factors, backend="cpu")
        model.user_factors = found["user_factors"]
        model.item_factors = found["item_factors"]
        one, total = float(found["one_iteration"]), float(found["total"])
    per_iteration = (total - one) / (args.iterations - 1)
    return model, {"per_iteration": per_iteration, "one_iteration": one, "total": total}


def spark_compare(args):
    from als.data import load
    from als.evaluation import ranking_metrics_at_k, train_test_split

    data = load(args.data)
    ratings = data.user_items
    train, test = train_test_split(ratings, 0.8, random_state=0)
    result = header(args, "against Spark MLlib")
    import subprocess

    version = [str(args.spark_python), "-c", "import pyspark; print(pyspark.__version__)"]
    result["versions"]["pyspark"] = subprocess.run(
        version, check=True, capture_output=True, text=True
    ).stdout.strip()
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    result["versions"]["java"] = java.splitlines()[0] if java else "unknown"
    mean_n = train.nnz / max(1, int((np.diff(train.indptr) > 0).sum()))
    result.update(
        data={"name": args.data, "users": ratings.shape[0], "items": ratings.shape[1]}
        | {"train_nnz": int(train.nnz), "test_nnz": int(test.nnz)},
        factors=args.factors,
        iterations=args.iterations,
        regularization=args.regularization,
        spark_alpha=args.alpha,
        mean_interactions_per_user=mean_n,
        rows=[],
    )
    # identical confidences: ours alpha * w with alpha = 1 and w = 1 + alpha_s * r
    weights = train.copy()
    weights.data = (1 + args.alpha * weights.data).astype(np.float32)
    params = {
        "factors": args.factors,
        "iterations": args.iterations,
        "regularization": args.regularization,
        "alpha": 1.0,
        "random_state": 0,
        "backend": "cpu",
    }

    def add(engine, model, seconds, **extra):
        metrics = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
        row = {"engine": engine, **seconds, "ndcg@10": metrics["ndcg"]}
        row.update(precision=metrics["precision"], map=metrics["map"], **extra)
        result["rows"].append(row)
        print(json.dumps(row))
        save(args, result, "spark", spark_markdown)

    seconds = []
    model = AlternatingLeastSquares(**params, num_threads=0)
    model.fit(weights, show_progress=False, callback=lambda i, s, loss: seconds.append(s))
    add("als, one machine, all cores", model, _timing(seconds))
    # Spark's mean penalty the other way round: lambda = regParam * mean n_u
    seconds = []
    scaled = {**params, "regularization": args.regularization * mean_n}
    model = AlternatingLeastSquares(**scaled, num_threads=0)
    model.fit(weights, show_progress=False, callback=lambda i, s, loss: seconds.append(s))
    add(
        f"als, one machine, lambda = {args.regularization:g} * mean n_u",
        model,
        _timing(seconds),
    )

    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        seconds = []
        model = AlternatingLeastSquares(**params, num_threads=1)
        fit_distributed(
            client,
            model,
            weights,
            show_progress=False,
            callback=lambda i, s, loss: seconds.append(s),
        )
    add("als on Dask, 2 workers x 1 thread", model, _timing(seconds))

    for reg_param, note in (
        (args.regularization / mean_n, "regParam = lambda / mean n_u"),
        (args.regularization, "regParam = lambda"),
    ):
        model, timing = spark_fit(args, train, reg_param)
        add(f"Spark MLlib ALS, local[{args.cores}], {note}", model, timing, reg_param=reg_param)
    return result


def _timing(seconds):
    return {"per_iteration": statistics.median(seconds[1:] or seconds), "total": sum(seconds)}


def spark_markdown(result):
    data, machine = result["data"], result["machine"]
    lines = [
        "# Our ALS (one machine, Dask) and Spark MLlib's ALS on the same split",
        "",
        f"`{result['command']}` on {machine['node']} ({machine['processor']}, "
        f"{machine['cpu_count']} cores), {result['date']}.",
        "",
        f"{data['name']}: {data['users']:,} users x {data['items']:,} items, "
        f"{data['train_nnz']:,} training and {data['test_nnz']:,} held-out interactions "
        "(`als.evaluation.train_test_split`, 80/20, seed 0). "
        f"{result['factors']} factors, {result['iterations']} iterations, confidence "
        f"`1 + alpha_s r` (alpha_s = {result['spark_alpha']:g}) for every engine (ours: "
        "weights `1 + alpha_s r`, "
        f"alpha 1). Ours: lambda = {result['regularization']:g}, CG 3 steps. Spark "
        "regularises by `regParam * n_u` (ALS-WR); mean n_u here "
        f"{result['mean_interactions_per_user']:.1f}. Spark's seconds per iteration are "
        "(fit with n iterations - fit with 1) / (n - 1), each fit to materialised factors "
        "after an untimed warm-up fit; "
        "ours are the median per-iteration time (the whole fit includes loading the compiled "
        "Numba kernels or compiling them in a fresh checkout). NDCG@10 by `als.evaluation."
        "ranking_metrics_at_k` for all (Spark's factors put into an "
        "`AlternatingLeastSquares`).",
        "",
        "| engine | s / iteration | s, whole fit | NDCG@10 | precision@10 | MAP@10 |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['engine']} | {row['per_iteration']:.3f} | {row['total']:.1f} "
            f"| {row['ndcg@10']:.4f} "
            f"| {row['precision']:.4f} | {row['map']:.4f} |"
        )
    lines += footer(result)
    return "\n".join(lines)


# -- shared ---------------------------------------------------------------------------------------


def header(args, what):
    import dask
    import distributed

    extra = {"dask": dask.__version__, "distributed": distributed.__version__}
    try:
        import pyspark

        extra["pyspark"] = pyspark.__version__
    except ImportError:
        pass
    return {
        "benchmark": f"distributed: {what}",
        "date": utc_now(),
        "command": "python -m benchmarks.distributed_bench " + " ".join(args.argv),
        "machine": machine_info(),
        "versions": {**versions(), **extra},
    }


def footer(result):
    versions_text = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    return ["", f"Versions: {versions_text}.", ""]


def save(args, result, kind, markdown):
    if not args.out:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"distributed-{kind}-{machine_slug()}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))


def estimate(args):
    """Print :func:`blocked_estimate` for a matrix size and several worker counts."""
    print(
        "| W | referenced items per user block | referenced users per item block "
        "| received per worker per iteration, locality | users in ranges "
        "| broadcast design | data per worker |"
    )
    print("|---|---|---|---|---|---|---|")
    for workers in args.workers:
        refs, received, memory = blocked_estimate(
            args.users, args.items, args.nnz, args.factors, workers
        )
        ranges = blocked_estimate(
            args.users, args.items, args.nnz, args.factors, workers, layout="ranges"
        )[1]
        broadcast = broadcast_received(args.users, args.items, args.factors, workers)
        print(
            f"| {workers} | {refs['referenced_items'] / 1e6:.1f}M "
            f"| {refs['referenced_users'] / 1e6:.1f}M | {received / 1e9:.1f} GB "
            f"| {ranges / 1e9:.1f} GB | {broadcast / 1e9:.1f} GB | {memory / 1e9:.1f} GB |"
        )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("traffic", help="bytes and memory per worker")
    measure.add_argument("--users", type=int, default=2_000_000)
    measure.add_argument("--items", type=int, default=200_000)
    measure.add_argument("--nnz", type=int, default=20_000_000)
    measure.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    measure.add_argument("--parquet", type=Path, help="folder for the Parquet files")
    measure.add_argument("--layout", choices=["locality", "ranges"], default="locality")
    spark = commands.add_parser("spark", help="against Spark MLlib (needs pyspark)")
    spark.add_argument("--data", default="ml-1m")
    spark.add_argument("--regularization", type=float, default=0.05)
    spark.add_argument("--alpha", type=float, default=1.0, help="Spark's alpha")
    spark.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    spark.add_argument(
        "--spark-python",
        type=Path,
        default=Path("/tmp/spark-venv/bin/python"),
        help="a Python with pyspark (a venv of its own: pyspark is no dependency of als)",
    )
    count = commands.add_parser("routes", help="rows received per worker, counted")
    count.add_argument("--users", type=int, default=2_000_000)
    count.add_argument("--items", type=int, default=200_000)
    count.add_argument("--nnz", type=int, default=20_000_000)
    count.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    count.add_argument("--factors", type=int, default=64)
    count.add_argument("--out", type=Path, help="folder for JSON + markdown")
    guess = commands.add_parser("estimate", help="the formulas for a matrix size")
    guess.add_argument("--users", type=int, default=100_000_000)
    guess.add_argument("--items", type=int, default=10_000_000)
    guess.add_argument("--nnz", type=int, default=1_000_000_000)
    guess.add_argument("--workers", type=int, nargs="+", default=[4, 16, 32, 64, 100, 256])
    guess.add_argument("--factors", type=int, default=64)
    for command, iterations in ((measure, 5), (spark, 15)):
        command.add_argument("--factors", type=int, default=64)
        command.add_argument("--iterations", type=int, default=iterations)
        command.add_argument("--out", type=Path, help="folder for JSON + markdown")
    args = parser.parse_args(argv)
    args.argv = argv
    commands = {"traffic": traffic, "routes": routes, "spark": spark_compare, "estimate": estimate}
    return commands[args.command](args)


if __name__ == "__main__":
    main()
