"""Fit speed: seconds per ALS iteration of als and implicit, on CPU and GPU.

Usage::

    python -m benchmarks.fit [grid] [--datasets ...] [--factors ...] [--engines ...]
    python -m benchmarks.fit turns --datasets ml-1m lastfm-2k --factors 32 128 512
    python -m benchmarks.fit ab --against /path/to/other/checkout --datasets ml-1m
    python -m benchmarks.fit --quick            # ml-100k, 32 factors: a smoke test, < 1 min
    OPENBLAS_CORETYPE=Haswell python -m benchmarks.fit ...   # another OpenBLAS kernel

Modes:

``grid`` (default)
    Every data set x factors x engine in a fresh process (its memory is its own, and no
    engine inherits another's warm caches): a warm-up fit of one iteration (Numba compile or
    cache load, CUDA module loading), then a fit of ``iterations + 1`` iterations whose last
    ``iterations`` are timed (``harness.seconds_per_iteration``), then the batched queries:
    ``recommend`` for 1,000 users (N=10, liked items filtered) and ``similar_items`` for
    1,000 items, median of 9 calls after a warm-up call. ``--repeats`` runs the whole
    configuration again, the engines taking turns; s/iter is the median over the repeats of
    each process's median. Before timing, each als engine must reproduce implicit's
    factors on a small matrix (``harness.agreement_error``). GPU times wait for the device.
``turns``
    The CPU engines in one process, taking turns fit by fit (``--repeats`` fits each,
    alternating order), s/iter the median of every timed iteration: a ratio that a busy
    machine moves less than the grid's.
``ab``
    This checkout's ``cpu`` fit against another checkout's (``--against PATH``, e.g. made by
    ``git worktree add``), each fit in a fresh process importing that checkout, the two
    taking turns ``--repeats`` times; wall and CPU seconds per iteration (CPU time moves
    less with other work on the machine) and whether both end with the same factors.

FLOPs per iteration, counting a multiply-add as 2 (:func:`iteration_flops`), give the
GFLOP/s column. Results go to ``results/fit/`` (``--out``), named by mode, data sets,
``OPENBLAS_CORETYPE`` and machine, unless ``--name`` says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse

from benchmarks import harness

QUERIES = 1000
N = 10
#: timed calls of each batched query after a warm-up call: a median of 9 calls of a few tens
#: of milliseconds rides out the short slow spells of a shared machine that 3 did not
QUERY_REPEATS = 9
MiB = 2**20

DEFAULT = {
    "datasets": ["ml-1m", "lastfm-2k", "synthetic-10m"],
    "factors": [32, 64, 128, 256, 512],
    "iterations": 2,
    "repeats": 3,
}
QUICK = {"datasets": ["ml-100k"], "factors": [32], "iterations": 2, "repeats": 1}

FLOP_FORMULA = (
    "FLOPs per half-iteration solving n rows against the m rows of the other side, with nnz "
    "stored entries, f factors and s CG steps: Gram 2 m f^2 + right-hand sides 2 nnz f + "
    "(s+1) (2 n f^2 + 4 nnz f) + 10 s n f (a multiply-add counts 2); an iteration is the "
    "user half plus the item half. Rows that stop CG early do less."
)


def half_iteration_flops(n, m, nnz, factors, cg_steps):
    """Floating-point operations of one half-iteration of the CG solver (multiply-add = 2).

    As ``backends.numba_kernels``' CG (and implicit's) does it: the Gram ``Y^T Y`` of the m
    x f fixed factors (``2 m f^2``); the right-hand sides (``2 f`` per entry); the residual
    and one ``A p`` per CG step, ``s + 1`` products, each ``2 f^2`` per row (``YtY v``)
    plus ``4 f`` per entry (``y . v``, then ``+= w y``); the vector updates (``10 f`` per
    row and step). Rows that stop early do less, so this is the most an iteration does.
    """
    return (
        2 * m * factors**2
        + 2 * nnz * factors
        + (cg_steps + 1) * (2 * n * factors**2 + 4 * nnz * factors)
        + 10 * cg_steps * n * factors
    )


def iteration_flops(n_users, n_items, nnz, factors, cg_steps):
    """FLOPs of one full iteration: both half-iterations."""
    return half_iteration_flops(n_users, n_items, nnz, factors, cg_steps) + half_iteration_flops(
        n_items, n_users, nnz, factors, cg_steps
    )


def short(name):
    """A data set's name for a file name: ``ml-1m`` -> ``ml1m``."""
    return name.replace("-", "")


# -- grid: one configuration in its own process -----------------------------------------------


def peak_rss_mib():
    """Peak resident memory of this process in MiB (``VmHWM``: a child's ``ru_maxrss``
    starts at its parent's high-water mark on Linux)."""
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def median_call(call, sync):
    """Median seconds of ``QUERY_REPEATS`` calls after a warm-up call, and the last answer."""
    call()
    sync()
    runs = [harness.timed(call, sync) for _ in range(QUERY_REPEATS)]
    return harness.median(seconds for seconds, _ in runs), runs[-1][1]


def run_worker(spec):
    """Measure one (engine, data set, factors) in this process; return a dict."""
    warnings.filterwarnings("ignore", message=".*BLAS.*thread.*", category=RuntimeWarning)
    engine, factors = spec["engine"], spec["factors"]
    user_items = scipy.sparse.load_npz(spec["path"]).tocsr()
    n_users, n_items = user_items.shape
    sync = harness.synchronizer(engine)

    def make(iterations):
        return harness.make_model(engine, factors, iterations, **spec["params"])

    with harness.engine_context(engine):
        times, warmup_s, model = harness.seconds_per_iteration(
            make, user_items, spec["iterations"], sync=sync
        )
        users = harness.sample_ids(n_users, QUERIES)
        items = harness.sample_ids(n_items, QUERIES, seed=1)
        liked = user_items[users]
        recommend_s, (ids, _) = median_call(
            lambda: model.recommend(users, liked, N=N, filter_already_liked_items=True), sync
        )
        similar_s, (similar, _) = median_call(lambda: model.similar_items(items, N=N), sync)
    problems = []
    if ids.shape != (len(users), N) or not ((ids >= 0) & (ids < n_items)).all():
        problems.append("recommend returned invalid ids")
    if np.mean(similar[:, 0] == items) < 0.99:
        problems.append("similar_items: items are not their own nearest neighbour")
    result = {
        "s_per_iter": harness.median(times),
        "iteration_times": times,
        "warmup_fit_s": warmup_s,
        "recommend_s": recommend_s,
        "similar_items_s": similar_s,
        "peak_rss_mib": peak_rss_mib(),
        "problems": problems,
    }
    if engine == "als-cuda":
        import cupy

        result["gpu_pool_mib"] = cupy.get_default_memory_pool().total_bytes() / MiB
    return result


def measure_in_process(spec, timeout):
    """Run ``run_worker(spec)`` in a fresh interpreter; return its results or the error."""
    path = os.pathsep.join([str(harness.ROOT), os.environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "benchmarks.fit", "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(
            command,
            cwd=harness.ROOT,
            env={**os.environ, "PYTHONPATH": path},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"took longer than {timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit status {done.returncode}: " + " | ".join(tail)}


def runnable_engines(names, result):
    """The engines that run here and, for als's, give implicit's answers; others skipped."""
    timed = []
    implicit_runs = harness.engine_unavailable("implicit-cpu") is None
    for engine in names:
        reason = harness.engine_unavailable(engine)
        if reason is None and engine.startswith("als-") and implicit_runs:
            wrong = harness.agreement_error(engine)
            reason = wrong and f"not timed, wrong answers: {wrong}"
        if reason:
            result.skip(engine, reason)
        else:
            timed.append(engine)
    return timed


def combine(measured):
    """One row from the repeats of a configuration: the first run's fields, the medians of
    s/iter and the query times, and every run's s/iter."""
    ok = [m for m in measured if "error" not in m]
    if not ok:
        return {"error": measured[0]["error"]}
    row = dict(ok[0])
    for key in ("s_per_iter", "recommend_s", "similar_items_s"):
        row[key] = harness.median(m[key] for m in ok)
    row["s_per_iter_runs"] = [m["s_per_iter"] for m in ok]
    return row


def add_ratios(rows, cg_steps):
    """GFLOP/s, and each time over implicit-cpu's (and implicit-gpu's) for the same cell."""
    by_key = {(r["dataset"], r["factors"], r["engine"]): r for r in rows}
    for row in rows:
        if row.get("s_per_iter") is None:
            continue
        flops = iteration_flops(row["users"], row["items"], row["nnz"], row["factors"], cg_steps)
        row["gflops"] = flops / row["s_per_iter"] / 1e9
        for base in ("implicit-cpu", "implicit-gpu"):
            theirs = by_key.get((row["dataset"], row["factors"], base), {})
            suffix = base.replace("-", "_")
            for key in ("s_per_iter", "recommend_s", "similar_items_s"):
                if theirs.get(key) and row.get(key):
                    row[f"{key[:-2] if key != 's_per_iter' else 'fit'}_ratio_{suffix}"] = (
                        row[key] / theirs[key]
                    )


GRID_COLUMNS = [
    ["dataset", "data set", "{}"],
    ["nnz", "non-zeros", "{:,}"],
    ["factors", "factors", "{:d}"],
    ["engine", "engine", "{}"],
    ["s_per_iter", "s/iter", "{:.4f}"],
    ["fit_ratio_implicit_cpu", "÷ implicit-cpu", "{:.2f}"],
    ["fit_ratio_implicit_gpu", "÷ implicit-gpu", "{:.2f}"],
    ["gflops", "GFLOP/s", "{:.1f}"],
    ["warmup_fit_s", "warm-up fit s", "{:.2f}"],
    ["recommend_s", "recommend 1k s", "{:.4f}"],
    ["recommend_ratio_implicit_cpu", "÷ implicit-cpu", "{:.2f}"],
    ["similar_items_s", "similar 1k s", "{:.4f}"],
    ["similar_items_ratio_implicit_cpu", "÷ implicit-cpu", "{:.2f}"],
    ["peak_rss_mib", "peak RSS MiB", "{:,.0f}"],
    ["gpu_pool_mib", "GPU pool MiB", "{:,.0f}"],
    ["problems", "problems", "{}"],
]
GRID_NOTE = (
    "**s/iter**: median wall seconds of one iteration (users, then items) after a warm-up "
    "fit, median over the repeats; **÷ implicit-…**: over implicit's on the same data and "
    "factors in this run (below 1: faster); **warm-up fit s**: the first fit (one iteration) "
    "in a fresh process, Numba compile or cache load included; **recommend 1k s** / "
    f"**similar 1k s**: one batched call for {QUERIES:,} users / items, N={N}, median of "
    f"{QUERY_REPEATS}; **peak RSS MiB**: the process's peak resident memory."
)
CHART = {
    "kind": "fit",
    "x": "factors",
    "y": "s_per_iter",
    "series": "engine",
    "panels": "dataset",
    "xlog": True,
    "ylog": True,
    "ylabel": "seconds per iteration",
}


def grid(args, result):
    """Every data set x factors x engine in fresh processes, engines taking turns."""
    engines = runnable_engines(args.engines, result)
    params = {**harness.DEFAULTS, "cg_steps": args.cg_steps, "threads": args.threads}
    rows = []
    with tempfile.TemporaryDirectory(prefix="als-bench-") as folder:
        for name in args.datasets:
            try:
                matrix = harness.load_dataset(name)
            except harness.DatasetMissing as exc:
                result.skip(name, str(exc))
                continue
            path = Path(folder) / f"{name}.npz"
            scipy.sparse.save_npz(path, matrix, compressed=False)
            shape = {"users": matrix.shape[0], "items": matrix.shape[1], "nnz": int(matrix.nnz)}
            for factors in args.factors:
                spec = {"factors": factors, "iterations": args.iterations, "path": str(path)}
                spec["params"] = params

                def run(engine, spec=spec):
                    return measure_in_process({**spec, "engine": engine}, args.timeout)

                runs = harness.take_turns(engines, args.repeats, run)
                for engine, measured in runs.items():
                    cell = {"dataset": name, **shape, "factors": factors, "engine": engine}
                    rows.append({**cell, **combine(measured)})
    add_ratios(rows, args.cg_steps)
    for row in rows:
        row["problems"] = "; ".join(row.get("problems") or []) or row.pop("error", None)
        result.add("fit", **row)


# -- turns: the CPU engines in one process -----------------------------------------------------


def fit_turns(engines, user_items, factors, args):
    """``{engine: [every timed iteration of each fit]}``, the engines taking turns."""
    params = {"cg_steps": args.cg_steps, "threads": args.threads}

    def run(engine, iterations=args.iterations):
        def make(n):
            return harness.make_model(engine, factors, n, **params)

        with harness.engine_context(engine):
            times, _, _ = harness.seconds_per_iteration(make, user_items, iterations)
        return times

    for engine in engines:  # compile or cache load, untimed
        run(engine, iterations=1)
    runs = harness.take_turns(engines, args.repeats, run)
    return {engine: [t for fit in fits for t in fit] for engine, fits in runs.items()}


def turns(args, result):
    """The CPU engines in this process, taking turns fit by fit; medians of every iteration."""
    engines = [e for e in runnable_engines(args.engines, result) if e.endswith("-cpu")]
    for name in args.datasets:
        user_items = harness.load_dataset(name)
        for factors in args.factors:
            times = fit_turns(engines, user_items, factors, args)
            medians = {engine: harness.median(values) for engine, values in times.items()}
            base = medians.get("implicit-cpu")
            for engine, values in times.items():
                result.add(
                    "fit",
                    dataset=name,
                    nnz=int(user_items.nnz),
                    factors=factors,
                    engine=engine,
                    s_per_iter=medians[engine],
                    fit_ratio_implicit_cpu=base and medians[engine] / base,
                    iteration_times=values,
                )


TURNS_COLUMNS = GRID_COLUMNS[:6]

# -- ab: two checkouts, fresh processes taking turns -------------------------------------------

#: what one A/B process runs (public API only, so any checkout can): argv = matrix, factors,
#: iterations, threads; prints one JSON line
AB_PROBE = """
import json, statistics, sys, time
import numpy as np, scipy.sparse
from als import AlternatingLeastSquares

path, factors, iterations, threads = sys.argv[1], *map(int, sys.argv[2:5])
matrix = scipy.sparse.load_npz(path).tocsr()

def make(n):
    return AlternatingLeastSquares(
        factors=factors, iterations=n, regularization=0.01, alpha=1.0, random_state=0,
        backend="cpu", cg_steps=3, num_threads=threads,
    )

make(1).fit(matrix, show_progress=False)
wall, cpu = [], []
model = make(iterations + 1)
model.fit(matrix, show_progress=False,
          callback=lambda *_: (wall.append(time.perf_counter()), cpu.append(time.process_time())))
print(json.dumps({
    "s": statistics.median(np.diff(wall).tolist()),
    "cpu_s": statistics.median(np.diff(cpu).tolist()),
    "factors_sum": [float(np.abs(model.user_factors).sum(dtype=np.float64)),
                    float(np.abs(model.item_factors).sum(dtype=np.float64))],
}))
"""


def commit_of(path):
    done = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or None


def ab(args, result):
    """This checkout against ``--against``, fresh processes taking turns."""
    checkouts = {"against": Path(args.against).resolve(), "this": harness.ROOT}
    labels = {name: f"{name} ({commit_of(path)})" for name, path in checkouts.items()}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.datasets:
            matrix = harness.load_dataset(name)
            path = Path(folder) / f"{name}.npz"
            scipy.sparse.save_npz(path, matrix, compressed=False)
            for factors in args.factors:

                def run(checkout, path=path, factors=factors):
                    probe_args = (path, factors, args.iterations, args.threads)
                    line = harness.run_probe(AB_PROBE, *probe_args, checkout=checkouts[checkout])
                    return json.loads(line)

                runs = harness.take_turns(list(checkouts), args.repeats, run)
                wall = {c: harness.median(r["s"] for r in runs[c]) for c in runs}
                cpu = {c: harness.median(r["cpu_s"] for r in runs[c]) for c in runs}
                sums = {c: runs[c][0]["factors_sum"] for c in runs}
                for checkout in checkouts:
                    result.add(
                        "ab",
                        dataset=name,
                        nnz=int(matrix.nnz),
                        factors=factors,
                        checkout=labels[checkout],
                        s_per_iter=wall[checkout],
                        ratio=wall[checkout] / wall["against"],
                        cpu_s_per_iter=cpu[checkout],
                        cpu_ratio=cpu[checkout] / cpu["against"],
                        same_factors=bool(np.allclose(sums[checkout], sums["against"], rtol=1e-6)),
                        runs=runs[checkout],
                    )


AB_COLUMNS = [
    ["dataset", "data set", "{}"],
    ["nnz", "non-zeros", "{:,}"],
    ["factors", "factors", "{:d}"],
    ["checkout", "checkout", "{}"],
    ["s_per_iter", "s/iter", "{:.4f}"],
    ["ratio", "÷ against", "{:.3f}"],
    ["cpu_s_per_iter", "CPU s/iter", "{:.4f}"],
    ["cpu_ratio", "÷ against (CPU)", "{:.3f}"],
    ["same_factors", "same factors", "{}"],
]

MODES = {
    "grid": (grid, GRID_COLUMNS, "fit speed, one process per engine", [GRID_NOTE, FLOP_FORMULA]),
    "turns": (turns, TURNS_COLUMNS, "fit speed, engines taking turns in one process", []),
    "ab": (ab, AB_COLUMNS, "fit speed of two checkouts, taking turns", []),
}


def parse_args(argv):
    parser = harness.argument_parser("fit", __doc__)
    parser.add_argument("mode", nargs="?", choices=sorted(MODES), default="grid")
    parser.add_argument("--quick", action="store_true", help="ml-100k, 32 factors, 1 repeat")
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=harness.dataset_names(),
        metavar="NAME",
        help=", ".join(harness.dataset_names()),
    )
    parser.add_argument("--factors", nargs="+", type=int)
    parser.add_argument(
        "--engines",
        nargs="+",
        choices=harness.ENGINES,
        metavar="ENGINE",
        help=", ".join(harness.ENGINES) + " (default: every one that runs here)",
    )
    parser.add_argument("--iterations", type=int, help="timed iterations per fit")
    parser.add_argument("--repeats", type=int, help="runs per engine, engines taking turns")
    parser.add_argument("--against", type=Path, help="ab: the checkout to compare with")
    parser.add_argument("--cg-steps", type=int, default=harness.DEFAULTS["cg_steps"])
    parser.add_argument("--threads", type=int, default=harness.DEFAULTS["threads"], help="0: all")
    parser.add_argument("--timeout", type=int, default=1800, help="grid: seconds per process")
    parser.add_argument("--out", type=Path, help="folder for the result (default results/fit)")
    parser.add_argument("--name", help="the result file's name (default: from what it measures)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode == "ab" and not args.against:
        parser.error("ab needs --against PATH")
    preset = QUICK if args.quick else DEFAULT
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.engines is None:
        args.engines = ["als-cpu", "implicit-cpu"] if args.quick else list(harness.ENGINES)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return None
    run, columns, title, notes = MODES[args.mode]
    coretype = os.environ.get("OPENBLAS_CORETYPE", "unset").lower()
    name = args.name or "-".join(["fit", args.mode, *map(short, args.datasets), coretype])
    params = {
        **{k: v for k, v in harness.DEFAULTS.items() if k not in ("cg_steps", "threads")},
        "cg_steps": args.cg_steps,
        "threads": args.threads or "all",
        "timed iterations per fit": args.iterations,
        "repeats": args.repeats,
    }
    result = harness.Result(
        f"fit {args.mode}",
        f"{title.capitalize()}: {', '.join(args.datasets)}",
        harness.command_line("fit", argv),
        params,
        None if args.no_save else harness.result_path(args.out, "fit", name),
        tables=[{"kind": "ab" if args.mode == "ab" else "fit", "columns": columns}],
        chart=None if args.mode == "ab" else CHART,
        notes=notes,
    )
    run(args, result)
    return result.finish()


if __name__ == "__main__":
    main()
