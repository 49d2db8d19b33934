"""The Dask fit: traffic and memory per worker, routed rows, a 1B estimate, Spark, agreement.

Usage::

    python -m benchmarks.distributed traffic --nnz 20000000 --workers 1 2 4 8
    python -m benchmarks.distributed routes --nnz 20000000 --workers 1 2 4 8 16 32 64
    python -m benchmarks.distributed estimate --nnz 1000000000 --factors 64
    python -m benchmarks.distributed spark --data ml-1m --iterations 10   # needs pyspark
    python -m benchmarks.distributed agreement --iterations 1 15 150
    python -m benchmarks.distributed MODE --quick                         # smoke tests

Modes:

``traffic``
    Writes a power-law matrix as Parquet files; for every worker count starts a
    ``LocalCluster`` (processes, one Dask thread and one Numba thread per worker) whose
    workers read the files and build the blocks (``als.distributed.partition_interactions``),
    then fits with ``als.distributed.fit_distributed``. Per worker: the bytes received from
    other workers per iteration (the worker's ``transfer_incoming_log``; median over
    iterations 2..n) and the peak resident memory while fitting (sampled every 20 ms after
    the blocks are built), each beside its formula (:mod:`benchmarks.traffic_model`) and
    beside a broadcast design. ``--layout ranges`` puts users in ranges of ids instead of
    the locality-aware assignment. The one-machine fit on all cores runs on the same matrix.
``routes``
    No cluster: counts exactly, from the matrix, the factor rows every worker would receive
    per iteration (``als.partitioning.received_rows``) for both layouts and any number of
    workers, with the blocks' balance.
``estimate``
    The formulas of :mod:`benchmarks.traffic_model` for a size you give.
``spark``
    One data set, one 80/20 split, three engines: our one-machine fit, our Dask fit (2
    workers) and Spark MLlib's ALS in local mode (``implicitPrefs=True``), same rank,
    iterations and confidence; seconds per iteration and NDCG@10 on the held-out part from
    the same evaluation code (Spark's factors are put into an ``AlternatingLeastSquares``).
    Spark's confidence is ``1 + alpha_s r``; ours is ``alpha w``, so ours trains on ``w = 1 +
    alpha_s r`` with ``alpha = 1``. Spark regularises row ``u`` by ``regParam * n_u``
    (ALS-WR), ours by a constant ``lambda``: Spark runs at ``regParam = lambda / mean(n_u)``
    (the same penalty for a user with the mean count) and at ``regParam = lambda``, ours
    once more at ``lambda * mean(n_u)``. pyspark runs in a Python of its own
    (``--spark-python``) through ``benchmarks/spark_als.py``: it is no dependency of als.
``agreement``
    ml-100k, 80/20 split: the one-machine ``cpu`` fit against the Dask fit on two worker
    processes, same parameters and seed (64 factors, one Numba thread each): the largest
    factor difference relative to the largest factor, the relative Frobenius difference and
    the largest difference of precision, MAP, NDCG and AUC at 10, per iteration count.

Results go to ``results/distributed/`` (``--out``), rewritten after every row.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks import harness
from benchmarks.traffic_model import (
    blocked_estimate,
    broadcast_received,
    predicted_memory,
    predicted_received,
)

MIB = 2**20
QUICK_MATRIX = {"users": 20_000, "items": 2_000, "nnz": 200_000}

# -- measured on the workers --------------------------------------------------------------------


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


# -- traffic and memory -------------------------------------------------------------------------


def write_parquet(user_items, folder, files=8):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    coo = user_items.tocoo()
    for part, rows in enumerate(np.array_split(np.arange(coo.nnz), files)):
        table = pa.table({"user": coo.row[rows], "item": coo.col[rows], "weight": coo.data[rows]})
        pq.write_table(table, folder / f"part{part:03d}.parquet")
    return folder


def run_workers(workers, folder, shape, params, iterations, layout):
    """Fit on a local cluster of ``workers`` processes; the model, seconds, per-worker rows."""
    import dask
    from distributed import Client, LocalCluster, wait

    from als import AlternatingLeastSquares
    from als.distributed import fit_distributed, partition_interactions

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
        blocked = partition_interactions(client, str(folder), shape=shape, layout=layout)
        wait(blocked.user_blocks + blocked.item_blocks + blocked.user_routes + blocked.item_routes)
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
                "received_mib": statistics.median(steady) / MIB,
                "predicted_received_mib": predicted[address] / MIB,
                "idle_rss_mib": idle[address] / MIB,
                "fit_start_rss_mib": peaks[address]["start"] / MIB,
                "peak_rss_mib": peaks[address]["peak"] / MIB,
                "predicted_data_mib": memory[address] / MIB,
            }
        )
    return model, seconds, per_worker


def steady_median(seconds):
    """Median seconds per iteration, the first (with its set-up) left out."""
    return statistics.median(seconds[1:] or seconds)


def traffic(args, result):
    from als import AlternatingLeastSquares

    user_items = harness.power_law_matrix(args.users, args.items, args.nnz)
    shape = user_items.shape
    params = {"factors": args.factors, "random_state": 0, "backend": "cpu", "num_threads": 1}
    seconds = []
    single = AlternatingLeastSquares(**{**params, "num_threads": 0}, iterations=args.iterations)
    single.fit(user_items, show_progress=False, callback=lambda i, s, loss: seconds.append(s))
    result.add("traffic", engine="one machine, all cores", s_per_iter=steady_median(seconds))
    with tempfile.TemporaryDirectory(prefix="als-parquet-") as folder:
        write_parquet(user_items, Path(args.parquet or folder))
        for workers in args.workers:
            model, seconds, per_worker = run_workers(
                workers, Path(args.parquet or folder), shape, params, args.iterations, args.layout
            )
            difference = float(
                np.abs(model.item_factors - single.item_factors).max()
                / np.abs(single.item_factors).max()
            )
            broadcast = broadcast_received(*shape, args.factors, workers) / MIB
            for number, worker in enumerate(per_worker):
                result.add(
                    "traffic",
                    engine=f"Dask, {workers} worker(s), {args.layout}",
                    s_per_iter=steady_median(seconds),
                    worker=number,
                    **worker,
                    broadcast_mib=broadcast,
                    difference_from_one_machine=difference,
                    iteration_seconds=seconds,
                )


TRAFFIC_COLUMNS = [
    ["engine", "engine", "{}"],
    ["s_per_iter", "s / iteration", "{:.2f}"],
    ["difference_from_one_machine", "factors vs one machine", "{:.0e}"],
    ["worker", "worker", "{:d}"],
    ["received_mib", "received MiB / it.", "{:.1f}"],
    ["predicted_received_mib", "formula MiB", "{:.1f}"],
    ["broadcast_mib", "broadcast design MiB", "{:.1f}"],
    ["idle_rss_mib", "idle RSS MiB", "{:.0f}"],
    ["fit_start_rss_mib", "RSS at fit start", "{:.0f}"],
    ["peak_rss_mib", "peak RSS MiB", "{:.0f}"],
    ["predicted_data_mib", "formula data MiB", "{:.0f}"],
]
TRAFFIC_NOTE = (
    "Received: bytes from other workers per iteration (median over iterations 2..n), beside "
    "the rows the routes send (formula, without the few-KiB Gram matrices) and what a "
    "broadcast design (every worker receives the full other side) would receive. Memory: "
    "peak RSS while fitting, the RSS when the fit started (blocks built), and the formula's "
    "data (interactions, own factors twice, referenced rows twice, routes), to compare with "
    "peak minus idle. Seconds per iteration on a machine with fewer cores than workers say "
    "nothing about speed-up."
)

# -- routed rows, counted -----------------------------------------------------------------------


def count_routes(user_items, workers, layout):
    """Rows each worker receives per iteration and the blocks' balance, for one layout.

    Counted from the matrix with :mod:`als.partitioning` (the same assignment the workers
    make), one block per worker and side; no cluster runs.
    """
    from als.partitioning import ROW_COST, block_bounds, block_of, received_rows, user_blocks

    n_users, n_items = user_items.shape
    users = user_blocks(user_items, workers, layout)
    items = block_of(np.arange(n_items), block_bounds(n_items, workers))
    rows = received_rows(user_items, users, items, workers)
    degree = np.diff(user_items.indptr)
    item_degree = np.bincount(user_items.indices, minlength=n_items)
    per_worker = rows["users"] + rows["items"]
    share = user_items.nnz / workers

    def imbalance(weights, blocks, total):
        return float(np.bincount(blocks, weights=weights, minlength=workers).max() / total)

    entry_rows = np.repeat(np.arange(n_users), degree)
    sent = entry_rows[users[entry_rows] != items[user_items.indices]]
    return {
        "received_rows_mean": float(per_worker.mean()),
        "received_user_rows_mean": float(rows["users"].mean()),
        "received_rows_max": int(per_worker.max()),
        "users_never_sent": n_users - len(np.unique(sent)),
        "user_block_work_imbalance": imbalance(
            degree + ROW_COST, users, (user_items.nnz + ROW_COST * n_users) / workers
        ),
        "user_block_nnz_imbalance": imbalance(degree, users, share),
        "user_block_rows_imbalance": imbalance(None, users, n_users / workers),
        "item_block_nnz_imbalance": imbalance(item_degree, items, share),
    }


def routes(args, result):
    user_items = harness.power_law_matrix(args.users, args.items, args.nnz)
    for workers in args.workers:
        for layout in ("ranges", "locality"):
            row = count_routes(user_items, workers, layout)
            row["received_mib_mean"] = row["received_rows_mean"] * args.factors * 4 / MIB
            result.add("routes", workers=workers, layout=layout, **row)


ROUTES_COLUMNS = [
    ["workers", "workers", "{:d}"],
    ["layout", "layout", "{}"],
    ["received_rows_mean", "received rows / worker (mean)", "{:,.0f}"],
    ["received_user_rows_mean", "of them users", "{:,.0f}"],
    ["received_rows_max", "max worker", "{:,}"],
    ["received_mib_mean", "MiB / worker / it. (mean)", "{:.1f}"],
    ["users_never_sent", "users never sent", "{:,}"],
    ["user_block_work_imbalance", "user blocks: work imbalance", "{:.3f}"],
    ["user_block_nnz_imbalance", "nnz", "{:.3f}"],
    ["user_block_rows_imbalance", "rows", "{:.3f}"],
    ["item_block_nnz_imbalance", "item blocks: nnz imbalance", "{:.3f}"],
]
ROUTES_NOTE = (
    "Counted exactly from the matrix by `als.partitioning.received_rows` (no fit), one block "
    "per worker and side, items in contiguous ranges of ids: the user and item rows a worker "
    "receives per iteration from other workers, for users in ranges of ids (`ranges`) and "
    "for the locality-aware assignment (`locality`: each user joins one of the item blocks "
    "it references). MiB: `rows * f * 4`. Imbalance: the largest block's work "
    "(interactions + a fixed cost per row), interactions and rows over the mean."
)

# -- the estimate -------------------------------------------------------------------------------


def estimate(args, result):
    for workers in args.workers:
        refs, received, memory = blocked_estimate(
            args.users, args.items, args.nnz, args.factors, workers
        )
        ranges = blocked_estimate(
            args.users, args.items, args.nnz, args.factors, workers, layout="ranges"
        )[1]
        result.add(
            "estimate",
            workers=workers,
            referenced_items_millions=refs["referenced_items"] / 1e6,
            referenced_users_millions=refs["referenced_users"] / 1e6,
            received_gb=received / 1e9,
            ranges_received_gb=ranges / 1e9,
            broadcast_received_gb=broadcast_received(args.users, args.items, args.factors, workers)
            / 1e9,
            data_gb=memory / 1e9,
        )


ESTIMATE_COLUMNS = [
    ["workers", "W", "{:d}"],
    ["referenced_items_millions", "items per user block (M)", "{:.1f}"],
    ["referenced_users_millions", "users per item block (M)", "{:.1f}"],
    ["received_gb", "received / worker / it., GB", "{:.1f}"],
    ["ranges_received_gb", "users in ranges, GB", "{:.1f}"],
    ["broadcast_received_gb", "broadcast design, GB", "{:.1f}"],
    ["data_gb", "data / worker, GB", "{:.1f}"],
]
ESTIMATE_NOTE = (
    "From `benchmarks.traffic_model.blocked_estimate`, assuming the popularity model of "
    "`harness.power_law_matrix` (user k drawn with probability ~ k^-0.8, item k ~ k^-0.9): "
    "a block of m = nnz / W interactions references sum_k 1 - exp(-m p_k) distinct rows of "
    "the other side. Data per worker: both sides' interactions, its factor rows twice, the "
    "larger in-block twice, the out-block row lists; add a worker's Python, NumPy, Numba and "
    "Dask footprint (0.3-0.4 GB measured)."
)

# -- against Spark ------------------------------------------------------------------------------


def spark_fit(args, train, reg_param):
    """Spark MLlib's implicit ALS on ``train`` (raw ratings) in ``--spark-python``'s Python.

    Returns an ``AlternatingLeastSquares`` holding Spark's factors, and its timings.
    """
    from als import AlternatingLeastSquares

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
    return model, {"s_per_iter": (total - one) / (args.iterations - 1), "total_s": total}


def timed_fit(model, fit):
    """``fit(model, callback)``; the model and its median seconds per iteration and total."""
    seconds = []
    fit(model, lambda i, s, loss: seconds.append(s))
    return model, {"s_per_iter": steady_median(seconds), "total_s": sum(seconds)}


def spark(args, result):
    from distributed import Client, LocalCluster

    from als import AlternatingLeastSquares
    from als.distributed import fit_distributed
    from als.evaluation import ranking_metrics_at_k, train_test_split

    version = [str(args.spark_python), "-c", "import pyspark; print(pyspark.__version__)"]
    try:
        found = subprocess.run(version, capture_output=True, text=True).stdout.strip()
    except OSError as exc:
        found = f"{exc}"
    if found and found[0].isdigit():
        result.data["provenance"]["versions"]["pyspark"] = found
    else:
        result.skip("Spark MLlib", f"no pyspark in {args.spark_python}: {found[-200:]}")
        found = None
    train, test = train_test_split(harness.load_dataset(args.data), 0.8, random_state=0)
    mean_n = train.nnz / max(1, int((np.diff(train.indptr) > 0).sum()))
    result.data["params"]["mean interactions per user (n_u)"] = round(mean_n, 1)
    # identical confidences: ours alpha * w with alpha = 1 and w = 1 + alpha_s * r
    weights = train.copy()
    weights.data = (1 + args.alpha * weights.data).astype(np.float32)
    params = {"factors": args.factors, "iterations": args.iterations, "alpha": 1.0}
    params.update(random_state=0, backend="cpu")

    def add(engine, penalty, fitted):
        model, timing = fitted
        metrics = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
        result.add("spark", engine=engine, mean_penalty=penalty, **timing, **metrics)

    def one_machine(model, callback):
        model.fit(weights, show_progress=False, callback=callback)

    lam = args.regularization
    model = AlternatingLeastSquares(**params, regularization=lam, num_threads=0)
    add(f"als, one machine, lambda {lam:g}", lam, timed_fit(model, one_machine))
    model = AlternatingLeastSquares(**params, regularization=lam * mean_n, num_threads=0)
    add(f"als, one machine, lambda {lam:g} * mean n_u", lam * mean_n, timed_fit(model, one_machine))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):

        def on_dask(model, callback):
            fit_distributed(client, model, weights, show_progress=False, callback=callback)

        model = AlternatingLeastSquares(**params, regularization=lam, num_threads=1)
        add(f"als on Dask, 2 workers x 1 thread, lambda {lam:g}", lam, timed_fit(model, on_dask))
    if found is None:
        return
    for reg_param, penalty in ((lam / mean_n, lam), (lam, lam * mean_n)):
        fitted = spark_fit(args, train, reg_param)
        add(f"Spark MLlib ALS, local[{args.cores}], regParam {reg_param:.3g}", penalty, fitted)


SPARK_COLUMNS = [
    ["engine", "engine", "{}"],
    ["mean_penalty", "mean penalty", "{:.3g}"],
    ["s_per_iter", "s / iteration", "{:.3f}"],
    ["total_s", "s, whole fit", "{:.1f}"],
    ["ndcg", "NDCG@10", "{:.4f}"],
    ["precision", "precision@10", "{:.4f}"],
    ["map", "MAP@10", "{:.4f}"],
]
SPARK_NOTE = (
    "One 80/20 split (`als.evaluation.train_test_split`, seed 0); confidence `1 + alpha_s r` "
    "for every engine (ours: weights `1 + alpha_s r`, alpha 1; CG, 3 steps). Spark "
    "regularises by `regParam * n_u` (ALS-WR), ours by a constant lambda: the mean penalty "
    "is the penalty of a user with the mean number of interactions. Spark's seconds per "
    "iteration: (fit of n iterations - fit of 1) / (n - 1), each to materialised factors "
    "after an untimed warm-up fit; ours: the median iteration. NDCG@10 by "
    "`als.evaluation.ranking_metrics_at_k` for all."
)

# -- agreement with the one-machine fit ---------------------------------------------------------


def agreement(args, result):
    from dask.distributed import Client, LocalCluster

    from als import AlternatingLeastSquares
    from als.distributed import fit_distributed
    from als.evaluation import ranking_metrics_at_k, train_test_split

    warnings.filterwarnings("ignore")
    train, test = train_test_split(harness.load_dataset("ml-100k"), 0.8, random_state=0)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        for iterations in args.iterations:
            params = dict(factors=64, iterations=iterations, random_state=0, backend="cpu")
            single = AlternatingLeastSquares(**params, num_threads=1).fit(
                train, show_progress=False
            )
            model = AlternatingLeastSquares(**params, num_threads=1)
            cluster_fit = fit_distributed(client, model, train, show_progress=False)
            row = {"iterations": iterations}
            for side in ("user_factors", "item_factors"):
                ours, theirs = getattr(cluster_fit, side), getattr(single, side)
                row[f"{side}_max"] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
                row[f"{side}_frobenius"] = float(
                    np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
                )
            one = ranking_metrics_at_k(single, train, test, K=10, show_progress=False)
            other = ranking_metrics_at_k(cluster_fit, train, test, K=10, show_progress=False)
            row["metrics_difference"] = max(abs(one[key] - other[key]) for key in one)
            result.add("agreement", **row, metrics_one_machine=one)


AGREEMENT_COLUMNS = [
    ["iterations", "iterations", "{:d}"],
    ["user_factors_max", "user factors: largest difference", "{:.2e}"],
    ["item_factors_max", "item factors: largest difference", "{:.2e}"],
    ["user_factors_frobenius", "user factors: Frobenius", "{:.2e}"],
    ["item_factors_frobenius", "item factors: Frobenius", "{:.2e}"],
    ["metrics_difference", "largest metric difference", "{:.1e}"],
]
AGREEMENT_NOTE = (
    "ml-100k, 80% training (`random_state=0`), 64 factors, the same seed: differences "
    "relative to the largest factor (and relative Frobenius norms) between the Dask fit on "
    "two worker processes and the one-machine fit, and the largest difference of "
    "precision, MAP, NDCG and AUC at 10. Accuracy, not speed."
)

MODES = {
    "traffic": (traffic, TRAFFIC_COLUMNS, TRAFFIC_NOTE, "traffic and memory per worker"),
    "routes": (routes, ROUTES_COLUMNS, ROUTES_NOTE, "factor rows each worker receives, counted"),
    "estimate": (estimate, ESTIMATE_COLUMNS, ESTIMATE_NOTE, "traffic and memory, estimated"),
    "spark": (spark, SPARK_COLUMNS, SPARK_NOTE, "one machine, Dask and Spark MLlib"),
    "agreement": (agreement, AGREEMENT_COLUMNS, AGREEMENT_NOTE, "Dask against one machine"),
}


def parse_args(argv):
    parser = harness.argument_parser("distributed", __doc__)
    parser.add_argument("mode", choices=list(MODES))
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--users", type=int, help="traffic, routes, estimate: matrix rows")
    parser.add_argument("--items", type=int, help="traffic, routes, estimate: matrix columns")
    parser.add_argument("--nnz", type=int, help="traffic, routes, estimate: interactions")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, nargs="+", help="per fit (agreement: several)")
    parser.add_argument("--layout", choices=["locality", "ranges"], default="locality")
    parser.add_argument("--parquet", type=Path, help="traffic: folder for the Parquet files")
    parser.add_argument("--data", default="ml-1m", help="spark: the data set")
    parser.add_argument("--regularization", type=float, default=0.05, help="spark: our lambda")
    parser.add_argument("--alpha", type=float, default=1.0, help="spark: Spark's alpha")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="spark: local[N]")
    parser.add_argument(
        "--spark-python",
        type=Path,
        default=Path("/tmp/spark-venv/bin/python"),
        help="spark: a Python with pyspark (a venv of its own: pyspark is no dependency of als)",
    )
    parser.add_argument("--out", type=Path, help="folder for the result (results/distributed)")
    parser.add_argument("--name", help="the result file's name (default: what it measures)")
    args = parser.parse_args(argv)
    big = args.mode == "estimate"
    size = (
        {"users": 100_000_000, "items": 10_000_000, "nnz": 1_000_000_000}
        if big
        else {"users": 2_000_000, "items": 200_000, "nnz": 20_000_000}
    )
    workers = {"traffic": [1, 2, 4], "routes": [1, 2, 4, 8, 16, 32, 64]}.get(
        args.mode, [4, 16, 32, 64, 100, 256]
    )
    iterations = {"spark": [10], "agreement": [1, 15, 150]}.get(args.mode, [3])
    if args.quick and big:
        workers = [16]  # each worker count evaluates the model over 100M users: seconds
    elif args.quick:
        size, workers = QUICK_MATRIX, [2] if args.mode == "traffic" else [1, 2, 4]
        iterations = [1, 3] if args.mode == "agreement" else [3]
        args.data = "ml-100k"
    for key, value in {**size, "workers": workers, "iterations": iterations}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.mode != "agreement":
        args.iterations = args.iterations[0]
    return args


def default_name(args):
    if args.mode in ("traffic", "routes", "estimate"):
        size = f"{args.nnz / 1e6:g}m" if args.nnz < 1e9 else f"{args.nnz / 1e9:g}b"
        layout = f"-{args.layout}" if args.mode == "traffic" else ""
        return f"{args.mode}{layout}-{size}-interactions-f{args.factors}"
    if args.mode == "spark":
        return f"spark-{args.data.replace('-', '')}-f{args.factors}"
    return "agreement-ml100k"


def main(argv=None):
    args = parse_args(argv)
    run, columns, note, title = MODES[args.mode]
    params = {"factors": args.factors, "iterations": args.iterations}
    if args.mode in ("traffic", "routes", "estimate"):
        params["matrix"] = f"{args.users:,} users x {args.items:,} items, {args.nnz:,} entries"
    if args.mode == "spark":
        params.update(data=args.data, regularization=args.regularization, spark_alpha=args.alpha)
    result = harness.Result(
        f"distributed {args.mode}",
        f"Distributed fit: {title}",
        harness.command_line("distributed", argv),
        params,
        harness.result_path(args.out, "distributed", args.name or default_name(args)),
        tables=[{"kind": args.mode, "columns": columns}],
        notes=[note],
    )
    run(args, result)
    result.save()
    return result.data


if __name__ == "__main__":
    main()
