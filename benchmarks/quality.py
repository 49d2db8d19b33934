"""Recommendation quality: tuned als against tuned implicit, and time to quality.

Usage::

    python -m benchmarks.quality [tune]          # ml-1m (ratings >= 3) and lastfm-2k
    python -m benchmarks.quality time --dataset ml-1m --factors 128 256
    python -m benchmarks.quality {tune,time} --quick                  # smoke tests, < 1 min
    python -m benchmarks.quality --report-only results/quality/NAME.json   # redraw

Modes:

``tune`` (default)
    For each data set: split the interactions 80/20 with split seed 0 and run
    ``als.tune.tune`` on the training part twice, with the same trial budget and sampler
    seed: once over our space (``als``: the opt-in confidence functions, alpha0, nu and the
    paper's initialisation), once over implicit's own parameters (``implicit``: factors,
    regularization, alpha, iterations); trials are scored on a validation split carved from
    the training part. Then fit each space's best settings, and the notebook's defaults
    (100 factors, lambda 0.01, alpha 1, 15 iterations), on fresh 80/20 splits with split
    seeds 1, 2, 3 and report held-out NDCG@10, MAP@10 and recall@20 (mean and sample
    standard deviation), and, for split seed 1, NDCG@10 after every iteration against the
    training seconds so far (the chart). Models in the implicit space are our model at
    implicit's parameters, which is implicit's model (``tests/test_agreement.py``), trained
    by the same backend so that the seconds compare.
``time``
    One 80/20 split (seed 0) of a data set's raw weights; for every factor count, als CG,
    als ``solver="ials++"`` (``--block-size``) and implicit take turns, each fitting
    ``--iterations`` iterations after an untimed one-iteration warm-up; after every iteration
    the callback scores held-out NDCG@10, the clock stopped meanwhile. Reported: the seconds
    each needs to reach the NDCG@10 implicit has after all its iterations (within
    ``REACH_TOLERANCE``), and that as a fraction of implicit's seconds.

Results go to ``results/quality/`` (``--out``), rewritten after every step.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import harness

#: data set -> (name for als.data.load, minimum weight kept)
DATASETS = {
    "ml-1m": ("ml-1m", 3.0),
    "lastfm-2k": ("lastfm-2k", None),
    "ml-100k": ("ml-100k", None),  # for --quick
}

#: the notebook's settings, as a reference row
NOTEBOOK = {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}

SPACES = ("als", "implicit")

#: label -> (engine, extra model attributes) of the time-to-quality runs
VARIANTS = {
    "als CG": ("als-cpu", {}),
    "als iALS++": ("als-cpu", {"solver": "ials++"}),
    "implicit CG": ("implicit-cpu", {}),
}

#: NDCG within this fraction of the target counts as reaching it: als CG and implicit compute
#: the same factors to float32 rounding, whose NDCG differ in the fourth digit
REACH_TOLERANCE = 0.002


def load(name):
    os.environ.setdefault("ALS_DATA_DIR", str(harness.DATA_DIR))
    from als.data import load as load_data

    source, min_weight = DATASETS[name]
    data = load_data(source, download=False)
    if min_weight is not None:
        data = data.filter(min_weight=min_weight)
    return data.user_items.astype(np.float32).tocsr()


# -- tune -------------------------------------------------------------------------------------


def recall_at(model, train, test, N=20, batch=1000):
    """Mean over test users of hits in the top ``N`` (train items filtered) / min(N, |test|)."""
    users = np.flatnonzero(np.diff(test.indptr))
    total = 0.0
    for start in range(0, len(users), batch):
        ids = users[start : start + batch]
        recommended, _ = model.recommend(ids, train[ids], N=N)
        for row, user in zip(recommended, ids, strict=True):
            relevant = test.indices[test.indptr[user] : test.indptr[user + 1]]
            hits = np.isin(row[row >= 0], relevant).sum()
            total += hits / min(N, len(relevant))
    return total / len(users)


def evaluate(params, train, test, seed, threads, curve=False):
    """Fit ``params`` on ``train``; return held-out metrics (and, with ``curve``, NDCG@10
    after every iteration against the training seconds so far)."""
    from als import AlternatingLeastSquares
    from als.evaluation import ranking_metrics_at_k

    model = AlternatingLeastSquares(**params, random_state=seed, backend="cpu", num_threads=threads)
    points, elapsed = [], [0.0]

    def record(iteration, seconds, loss):
        # ``seconds`` is this iteration's fit time: the model's clock restarts after the
        # callback, so the evaluation below is not counted
        elapsed[0] += seconds
        if curve:
            ndcg = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)["ndcg"]
            points.append([elapsed[0], ndcg])

    model.fit(train, show_progress=False, callback=record)
    metrics = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
    return {
        "ndcg@10": metrics["ndcg"],
        "map@10": metrics["map"],
        "recall@20": recall_at(model, train, test, N=20),
        "fit_seconds": elapsed[0],
        "curve": points,
    }


def search(name, train, space, args, result):
    """Tune ``space`` on ``train``; record and return the best parameters."""
    from als.tune import tune

    started = time.perf_counter()
    found = tune(
        train,
        space=space,
        trials=args.trials,
        minutes=args.minutes,
        seed=args.tune_seed,
        k=10,
        backend="cpu",
        threads=args.threads,
        max_factors=args.max_factors,
        max_iterations=args.max_iterations,
        show_progress=False,
    )
    result.add(
        "tuned",
        dataset=name,
        space=space,
        params=json.dumps(found.best_params, sort_keys=True),
        validation_ndcg=found.best_value,
        trials_finished=sum(t["state"] == "complete" for t in found.trials),
        search_minutes=(time.perf_counter() - started) / 60,
        trials=found.trials,
    )
    return found.best_params


def tune_mode(args, result):
    from als.evaluation import train_test_split

    for name in args.datasets:
        matrix = load(name)
        train, _ = train_test_split(matrix, 0.8, random_state=args.tune_seed)
        candidates = {
            "tuned, our options": search(name, train, "als", args, result),
            "tuned, implicit's space": search(name, train, "implicit", args, result),
            "notebook defaults": NOTEBOOK,
        }
        for label, params in candidates.items():
            runs = []
            for position, seed in enumerate(args.seeds):
                train, test = train_test_split(matrix, 0.8, random_state=seed)
                runs.append(evaluate(params, train, test, seed, args.threads, position == 0))
            for seconds, ndcg in runs[0]["curve"]:
                result.add("curve", panel=name, settings=label, seconds=seconds, ndcg=ndcg)
            summary = {}
            for metric in ("ndcg@10", "map@10", "recall@20", "fit_seconds"):
                values = [run[metric] for run in runs]
                summary[metric] = statistics.fmean(values)
                summary[f"{metric} sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
            result.add(
                "quality",
                dataset=f"{name} ({matrix.shape[0]:,} x {matrix.shape[1]:,}, {matrix.nnz:,})",
                settings=label,
                **summary,
                params=json.dumps(params, sort_keys=True),
                runs=[{k: v for k, v in run.items() if k != "curve"} for run in runs],
            )


QUALITY_COLUMNS = [
    ["dataset", "data set (users x items, interactions)", "{}"],
    ["settings", "settings", "{}"],
    ["ndcg@10", "NDCG@10", "{:.4f}"],
    ["ndcg@10 sd", "±", "{:.4f}"],
    ["map@10", "MAP@10", "{:.4f}"],
    ["map@10 sd", "±", "{:.4f}"],
    ["recall@20", "recall@20", "{:.4f}"],
    ["recall@20 sd", "±", "{:.4f}"],
    ["fit_seconds", "fit s", "{:.1f}"],
    ["fit_seconds sd", "±", "{:.1f}"],
]
TUNED_COLUMNS = [
    ["dataset", "data set", "{}"],
    ["space", "space", "{}"],
    ["validation_ndcg", "validation NDCG@10", "{:.4f}"],
    ["trials_finished", "trials", "{:d}"],
    ["search_minutes", "minutes", "{:.1f}"],
    ["params", "best settings", "`{}`"],
]

# -- time to quality --------------------------------------------------------------------------


def curve(label, factors, args, train, test):
    """[(cumulative seconds, NDCG@10)] after each iteration of one variant."""
    from als.evaluation import ndcg_at_k

    engine, extra = VARIANTS[label]
    if "solver" in extra:
        extra = {**extra, "block_size": args.block_size}

    def build(n):
        model = harness.make_model(engine, factors, n)
        for name, value in extra.items():
            setattr(model, name, value)
        return model

    points, elapsed = [], [0.0]

    def score(iteration, seconds, loss):
        elapsed[0] += seconds
        points.append((elapsed[0], float(ndcg_at_k(model, train, test, K=10, show_progress=False))))

    with harness.engine_context(engine):
        build(1).fit(train, show_progress=False)
        model = build(args.iterations)
        model.fit(train, show_progress=False, callback=score)
    return points


def reach(points, target):
    """Seconds at the first point whose NDCG reaches ``target`` (None if none does)."""
    floor = target * (1 - REACH_TOLERANCE)
    return next((seconds for seconds, ndcg in points if ndcg >= floor), None)


def time_mode(args, result):
    from als.evaluation import train_test_split

    train, test = train_test_split(harness.load_dataset(args.dataset), 0.8, random_state=0)
    for factors in args.factors:
        curves = harness.take_turns(
            list(VARIANTS), 1, lambda label, f=factors: curve(label, f, args, train, test)
        )
        curves = {label: runs[0] for label, runs in curves.items()}
        implicit_seconds, target = curves["implicit CG"][-1]
        for label, points in curves.items():
            for seconds, ndcg in points:
                result.add(
                    "curve", panel=f"{factors} factors", settings=label, seconds=seconds, ndcg=ndcg
                )
            seconds = reach(points, target)
            result.add(
                "time_to_quality",
                factors=factors,
                settings=label,
                target_ndcg=target,
                seconds_to_target=seconds,
                ratio=None if seconds is None else seconds / implicit_seconds,
                final_ndcg=points[-1][1],
                final_seconds=points[-1][0],
            )


TIME_COLUMNS = [
    ["factors", "factors", "{:d}"],
    ["settings", "variant", "{}"],
    ["target_ndcg", "target NDCG@10", "{:.4f}"],
    ["seconds_to_target", "seconds to target", "{:.2f}"],
    ["ratio", "÷ implicit", "{:.2f}"],
    ["final_ndcg", "final NDCG@10", "{:.4f}"],
    ["final_seconds", "final s", "{:.2f}"],
]
CHART = {
    "kind": "curve",
    "x": "seconds",
    "y": "ndcg",
    "series": "settings",
    "panels": "panel",
    "xlabel": "training seconds",
    "ylabel": "held-out NDCG@10",
}


def parse_args(argv):
    parser = harness.argument_parser("quality", __doc__)
    parser.add_argument("mode", nargs="?", choices=["tune", "time"], default="tune")
    parser.add_argument("--quick", action="store_true", help="ml-100k, tiny budgets")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="tune")
    parser.add_argument("--trials", type=int, default=30, help="tune: trials per search")
    parser.add_argument("--minutes", type=float, default=6.0, help="tune: cap per search")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="tune: splits")
    parser.add_argument("--max-factors", type=int, default=128)
    parser.add_argument("--max-iterations", type=int, default=20)
    parser.add_argument("--dataset", default="ml-1m", help="time: the data set")
    parser.add_argument("--factors", nargs="+", type=int, default=[128, 256], help="time")
    parser.add_argument("--iterations", type=int, default=15, help="time: per fit")
    parser.add_argument("--block-size", type=int, default=32, help="time: iALS++ block")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, help="folder for the result (results/quality)")
    parser.add_argument("--name", help="the result file's name (default: what it measures)")
    parser.add_argument("--report-only", type=Path, help="render this result JSON again")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets, args.dataset = ["ml-100k"], "ml-100k"
        args.trials, args.minutes, args.seeds = 2, 0.5, [1, 2]
        args.max_factors, args.max_iterations = 16, 3
        args.factors, args.iterations = [32], 3
    args.datasets = args.datasets or ["ml-1m", "lastfm-2k"]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report_only:
        harness.render(args.report_only)
        return 0
    if args.mode == "tune":
        name = "-".join(["quality-tuned", *(d.replace("-", "") for d in args.datasets)])
        title = "Held-out quality: tuned als options against tuned implicit parameters"
        params = {
            "trials per search": args.trials,
            "minutes per search at most": args.minutes,
            "sampler seed and tuning split seed": args.tune_seed,
            "held-out split seeds": args.seeds,
            "factors at most": args.max_factors,
            "iterations at most": args.max_iterations,
            "threads": args.threads or "all",
        }
        tables = [
            {"kind": "quality", "columns": QUALITY_COLUMNS},
            {"kind": "tuned", "title": "Tuned settings", "columns": TUNED_COLUMNS},
        ]
    else:
        name = f"time-to-quality-{args.dataset.replace('-', '')}"
        title = f"Time to quality on {args.dataset}: held-out NDCG@10 against fit seconds"
        params = {
            **harness.DEFAULTS,
            "iterations": args.iterations,
            "iALS++ block size": args.block_size,
            "split": "80/20, seed 0; scoring time not counted",
        }
        tables = [{"kind": "time_to_quality", "columns": TIME_COLUMNS}]
    result = harness.Result(
        f"quality {args.mode}",
        title,
        harness.command_line("quality", argv),
        params,
        harness.result_path(args.out, "quality", args.name or name),
        tables=tables,
        chart=CHART,
    )
    (tune_mode if args.mode == "tune" else time_mode)(args, result)
    result.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
