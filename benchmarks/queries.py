"""Query speed: batched ``recommend`` and ``similar_items``, serving under threads, cold start.

Usage::

    python -m benchmarks.queries [turns] [--datasets lastfm-2k synthetic-30k-items] [--factors 128]
    python -m benchmarks.queries serving --threads 1 2 4
    python -m benchmarks.queries cold-start --repeats 3
    python -m benchmarks.queries {turns,serving,cold-start} --quick     # smoke tests, < 1 min

Modes:

``turns`` (default)
    als against implicit in one process, the two taking turns call by call: implicit fits
    one iteration (``harness.DEFAULTS``), als takes a copy of its factors, and the two
    engines' ``recommend`` (1,000 users, N=10, liked items filtered), then their
    ``similar_items`` (1,000 items, N=10), take turns call by call in alternating order.
    implicit runs under ``threadpool_limits(1, 'blas')``. A first call of each warms up and
    checks that the two engines' scores agree; the figures are medians over ``--rounds``,
    with the median of the per-round ratios beside the ratio of medians. (``python -m
    benchmarks.fit`` also times both queries, each engine in its own process.)
``serving``
    One model (20,000 x 5,000 power-law matrix, 64 factors) answers the same single-user
    ``recommend`` calls (N=10, liked items filtered) sequentially, for the reference answers,
    then from pools of 1, 2, 4 threads sharing that model. Every threaded answer is checked
    against the sequential one, and the BLAS thread limits against what they were, before
    the best of ``--rounds`` counts as queries per second. ``--num-threads`` sets Numba's
    threads per query (default 1: the serving threads are the parallelism).
``cold-start``
    Fresh processes, each with its own ``NUMBA_CACHE_DIR``: the first (cold) compiles
    everything, the second (cached) loads it. Each imports ``als``, fits a tiny model (500
    x 300, 5% dense, 16 factors, 2 iterations) and asks for ``recommend`` once; wall and CPU
    seconds of each step, medians of ``--repeats``, and the compile events over 0.2 s of
    the first cold run (``numba.core.event``, nested events inside their parents).

Results go to ``results/queries/`` (``--out``).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import harness

QUERIES = 1000
N = 10

# -- turns ------------------------------------------------------------------------------------


def check_scores(what, ours, theirs):
    """The two engines' scores agree row by row (float32 sums in other orders: 1e-3)."""
    if not np.allclose(ours[1], theirs[1], rtol=1e-3, atol=1e-3 * np.abs(theirs[1]).max()):
        raise AssertionError(f"{what}: als and implicit disagree on the scores")


def race_models(user_items, factors):
    """implicit's model fitted one iteration, and an als model holding a copy of its factors."""
    with harness.engine_context("implicit-cpu"):
        theirs = harness.make_model("implicit-cpu", factors, 1)
        theirs.fit(user_items, show_progress=False)
    ours = harness.make_model("als-cpu", factors, 1)
    ours.user_factors = np.asarray(theirs.user_factors)
    ours.item_factors = np.asarray(theirs.item_factors)
    return {"als-cpu": ours, "implicit-cpu": theirs}


def race(name, factors, rounds):
    """Every round's seconds of each engine's batched recommend and similar_items."""
    warnings.filterwarnings("ignore", message=".*BLAS.*thread.*", category=RuntimeWarning)
    user_items = harness.load_dataset(name)
    users = harness.sample_ids(user_items.shape[0], QUERIES)
    items = harness.sample_ids(user_items.shape[1], QUERIES, seed=1)
    liked = user_items[users]
    models = race_models(user_items, factors)
    calls = {
        "recommend": lambda m: m.recommend(users, liked, N=N, filter_already_liked_items=True),
        "similar_items": lambda m: m.similar_items(items, N=N),
    }
    times = {}
    for query, call in calls.items():

        def run(engine, call=call):
            with harness.engine_context(engine):
                return harness.timed(lambda: call(models[engine]))

        warm = {engine: run(engine)[1] for engine in models}  # warm-up, and the check
        check_scores(f"{name} f{factors} {query}", warm["als-cpu"], warm["implicit-cpu"])
        runs = harness.take_turns(list(models), rounds, run)
        times[query] = {engine: [seconds for seconds, _ in r] for engine, r in runs.items()}
    return user_items.shape, times


def turns(args, result):
    for name in args.datasets:
        for factors in args.factors:
            shape, times = race(name, factors, args.rounds)
            for query, by_engine in times.items():
                ours, theirs = by_engine["als-cpu"], by_engine["implicit-cpu"]
                pairs = zip(ours, theirs, strict=True)
                result.add(
                    "queries",
                    dataset=name,
                    items=shape[1],
                    factors=factors,
                    query=query,
                    als_s=harness.median(ours),
                    implicit_s=harness.median(theirs),
                    ratio=harness.median(ours) / harness.median(theirs),
                    median_ratio=harness.median(a / b for a, b in pairs),
                    als_runs=ours,
                    implicit_runs=theirs,
                )


TURNS_COLUMNS = [
    ["dataset", "data set", "{}"],
    ["items", "items", "{:,}"],
    ["factors", "factors", "{:d}"],
    ["query", "query", "{}"],
    ["als_s", "als s", "{:.4f}"],
    ["implicit_s", "implicit s", "{:.4f}"],
    ["ratio", "als ÷ implicit", "{:.2f}"],
    ["median_ratio", "per round", "{:.2f}"],
]
TURNS_NOTE = (
    f"Batched calls: {QUERIES:,} users (recommend, liked items filtered) or {QUERIES:,} items "
    f"(similar_items), N={N}; als ranks a copy of implicit's factors and both answers are "
    "checked by score first. **als ÷ implicit**: ratio of the medians; **per round**: "
    "median of the ratios of calls made side by side."
)

# -- serving ----------------------------------------------------------------------------------


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info())


def check_answers(answers, reference):
    for (ids, scores), (expected_ids, expected) in zip(answers, reference, strict=True):
        # same kernels on the same inputs: only float32 rounding may differ
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        if not np.array_equal(ids, expected_ids):
            tied = np.isclose(scores, expected, rtol=1e-5, atol=1e-6)
            assert tied.all(), "a threaded answer differs from the sequential one"


def serving(args, result):
    from als import AlternatingLeastSquares

    user_items = harness.power_law_matrix(args.users, args.items, args.nnz, seed=0)
    model = AlternatingLeastSquares(
        factors=args.factors[0],
        iterations=3,
        random_state=0,
        backend=args.backend,
        num_threads=args.num_threads,
    ).fit(user_items, show_progress=False)
    users = np.random.default_rng(1).choice(user_items.shape[0], args.queries, replace=False)
    rows = [user_items[user] for user in users]

    def query(position):
        return model.recommend(int(users[position]), rows[position], N=N)

    query(0)  # compile or load the kernels before anything is timed
    reference = [query(position) for position in range(len(users))]
    before, single = blas_threads(), None
    for threads in args.threads:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            check_answers(list(pool.map(query, range(len(users)))), reference)  # warm-up

            def run(_, pool=pool):
                seconds, answers = harness.timed(lambda: list(pool.map(query, range(len(users)))))
                check_answers(answers, reference)
                return seconds

            best = min(harness.take_turns(["pool"], args.rounds, run)["pool"])
        if blas_threads() != before:
            raise AssertionError("BLAS thread limits were not restored")
        if threads == 1:
            single = best
        result.add(
            "serving",
            backend=args.backend,
            threads=threads,
            queries=len(users),
            seconds=best,
            queries_per_second=len(users) / best,
            speedup_over_1_thread=single and single / best,
        )


SERVING_COLUMNS = [
    ["backend", "backend", "{}"],
    ["threads", "serving threads", "{:d}"],
    ["queries", "queries", "{:,}"],
    ["seconds", "best s", "{:.3f}"],
    ["queries_per_second", "queries/s", "{:,.0f}"],
    ["speedup_over_1_thread", "÷ 1 thread", "{:.2f}"],
]

# -- cold start -------------------------------------------------------------------------------

COLD_START_PROBE = r"""
import json, time
wall, cpu = time.perf_counter, time.process_time
w0, c0 = wall(), cpu()
from numba.core.event import install_recorder
import numpy as np, scipy.sparse as sp
import als
w1, c1 = wall(), cpu()
m = sp.random(500, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
with install_recorder("numba:compile") as recorder:
    model = als.AlternatingLeastSquares(factors=16, iterations=2, random_state=0)
    model.fit(m, show_progress=False)
    w2, c2 = wall(), cpu()
    model.recommend(np.arange(10), m[:10], N=5)
    w3, c3 = wall(), cpu()
starts, events = {}, []
for stamp, event in recorder.buffer:
    key = (id(event.data["dispatcher"]), str(event.data["args"]))
    if event.is_start:
        starts[key] = stamp
    elif stamp - starts[key] > 0.2:
        function = event.data["dispatcher"].py_func
        events.append([f"{function.__module__}.{function.__name__}", stamp - starts[key]])
print(json.dumps({
    "import_s": w1 - w0, "fit_s": w2 - w1, "query_s": w3 - w2, "fit_plus_query_s": w3 - w1,
    "import_cpu_s": c1 - c0, "fit_plus_query_cpu_s": c3 - c1, "compile_events_s": events,
}))
"""


def cold_start(args, result):
    runs = {"cold": [], "cached": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            for state in runs:  # cold first: the second process finds the cache filled
                line = harness.run_probe(COLD_START_PROBE, NUMBA_CACHE_DIR=cache)
                runs[state].append(json.loads(line))
    for state, probes in runs.items():
        keys = [key for key in probes[0] if key != "compile_events_s"]
        medians = {key: harness.median(probe[key] for probe in probes) for key in keys}
        events = probes[0]["compile_events_s"]
        result.add("cold_start", cache=state, runs=len(probes), **medians, compile_events_s=events)
    for function, seconds in runs["cold"][0]["compile_events_s"]:
        result.add("compile_event", function=function, seconds=seconds)


COLD_START_COLUMNS = [
    ["cache", "Numba cache", "{}"],
    ["import_s", "import s", "{:.2f}"],
    ["fit_s", "first fit s", "{:.2f}"],
    ["query_s", "first query s", "{:.2f}"],
    ["fit_plus_query_s", "fit + query s", "{:.2f}"],
    ["fit_plus_query_cpu_s", "fit + query CPU s", "{:.2f}"],
]
COMPILE_COLUMNS = [["function", "compiled function", "{}"], ["seconds", "seconds", "{:.2f}"]]

MODES = {
    "turns": (turns, "Batched queries, als and implicit taking turns call by call"),
    "serving": (serving, "Serving throughput: single-user recommend from a thread pool"),
    "cold-start": (cold_start, "Cold and cached first fit and query, fresh processes"),
}
TABLES = {
    "turns": [{"kind": "queries", "columns": TURNS_COLUMNS}],
    "serving": [{"kind": "serving", "columns": SERVING_COLUMNS}],
    "cold-start": [
        {"kind": "cold_start", "columns": COLD_START_COLUMNS},
        {"kind": "compile_event", "title": "Compile events, cold", "columns": COMPILE_COLUMNS},
    ],
}


def parse_args(argv):
    parser = harness.argument_parser("queries", __doc__)
    parser.add_argument("mode", nargs="?", choices=list(MODES), default="turns")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--datasets", nargs="+", choices=harness.dataset_names(), metavar="NAME")
    parser.add_argument("--factors", nargs="+", type=int)
    parser.add_argument("--rounds", type=int, help="turns: timed rounds; serving: best of")
    parser.add_argument("--threads", type=int, nargs="+", help="serving: pool sizes")
    parser.add_argument("--users", type=int, default=20_000, help="serving: matrix rows")
    parser.add_argument("--items", type=int, default=5_000, help="serving: matrix columns")
    parser.add_argument("--nnz", type=int, default=500_000, help="serving: stored entries")
    parser.add_argument("--queries", type=int, default=2_000, help="serving: queries per round")
    parser.add_argument("--num-threads", type=int, default=1, help="serving: Numba threads")
    parser.add_argument("--backend", default="cpu", choices=["cpu", "numpy", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="cold-start: process pairs")
    parser.add_argument("--out", type=Path, help="folder for the result (results/queries)")
    parser.add_argument("--name", help="the result file's name (default: what it measures)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["ml-100k"]
        args.factors = args.factors or [32]
        args.rounds = args.rounds or 3
        args.threads = args.threads or [1, 2]
        args.users, args.items, args.nnz, args.queries, args.repeats = 2000, 1000, 50_000, 200, 1
    args.datasets = args.datasets or ["lastfm-2k", "synthetic-30k-items"]
    args.factors = args.factors or ([64] if args.mode == "serving" else [128])
    args.rounds = args.rounds or (3 if args.mode == "serving" else 9)
    args.threads = args.threads or [1, 2, 4]
    return args


def default_name(args):
    if args.mode == "turns":
        datasets = [name.replace("-", "") for name in args.datasets]
        return "-".join(["queries-turns", *datasets, *(f"f{f}" for f in args.factors)])
    if args.mode == "serving":
        return f"serving-{args.backend}-{args.users}x{args.items}-f{args.factors[0]}"
    return "cold-start"


def main(argv=None):
    args = parse_args(argv)
    run, title = MODES[args.mode]
    params = {
        "turns": {"queries": QUERIES, "N": N, "rounds": args.rounds, **harness.DEFAULTS},
        "serving": {
            "matrix": f"{args.users:,} x {args.items:,}, {args.nnz:,} entries (power law)",
            "factors": args.factors[0],
            "N": N,
            "numba_threads_per_query": args.num_threads,
            "best of": args.rounds,
        },
        "cold-start": {"repeats": args.repeats, "model": "500 x 300, 5% dense, 16 factors"},
    }[args.mode]
    result = harness.Result(
        f"queries {args.mode}",
        title,
        harness.command_line("queries", argv),
        params,
        None if args.no_save else harness.result_path(args.out, "queries", default_name(args)),
        tables=TABLES[args.mode],
        notes=[TURNS_NOTE] if args.mode == "turns" else [],
    )
    run(args, result)
    return result.finish()


if __name__ == "__main__":
    main()
