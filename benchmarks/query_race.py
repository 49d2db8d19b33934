"""Batched queries, als against implicit in one process, the two taking turns call by call.

Usage::

    python -m benchmarks.query_race [--datasets lastfm-2k synthetic-30k-items] [--factors 128]
        [--rounds 9] [--out FILE.json]

``benchmarks.compare`` times each engine in its own process, three calls each: on a shared
machine a slow spell can land on one engine only. Here implicit fits one iteration (the
shared parameters of ``benchmarks.common.DEFAULTS``), als takes a copy of its factors, and each
round times als's ``recommend`` (1,000 users, N=10, liked items filtered), implicit's, als's
``similar_items`` (1,000 items, N=10), then implicit's, so the four share the machine's
state. implicit runs under ``threadpool_limits(1, 'blas')`` (``benchmarks.common.
engine_context``), as ``benchmarks.compare`` runs it. Each call's answer is checked against
the other engine's by score before any time counts. Prints medians, the ratio of medians and
the median of the per-round ratios; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DEFAULTS,
    blas_info,
    engine_context,
    load_dataset,
    machine_info,
    make_model,
    utc_now,
    versions,
)

QUERIES = 1000
N = 10


def _timed(call, context=None):
    start = time.perf_counter()
    if context is None:
        result = call()
    else:
        with context:
            result = call()
    return time.perf_counter() - start, result


def _check(name, ours, theirs):
    """The two engines' scores agree row by row (float32 sums in other orders: 1e-3)."""
    if not np.allclose(ours[1], theirs[1], rtol=1e-3, atol=1e-3 * np.abs(theirs[1]).max()):
        raise AssertionError(f"{name}: als and implicit disagree on the scores")


def race(name, factors, rounds):
    """Median seconds of each engine's batched recommend and similar_items on ``name``."""
    warnings.filterwarnings("ignore", message=".*BLAS.*thread.*", category=RuntimeWarning)
    user_items = load_dataset(name)
    n_users, n_items = user_items.shape
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(n_users, min(QUERIES, n_users), replace=False))
    items = np.sort(rng.choice(n_items, min(QUERIES, n_items), replace=False))
    liked = user_items[users]
    with engine_context("implicit-cpu"):
        theirs = make_model("implicit-cpu", factors, 1, **DEFAULTS)
        theirs.fit(user_items, show_progress=False)
    # als ranks with a copy of implicit's factors: the same scores, checked below
    ours = make_model("als-cpu", factors, 1, **DEFAULTS)
    ours.user_factors = np.asarray(theirs.user_factors)
    ours.item_factors = np.asarray(theirs.item_factors)
    models = {"als-cpu": ours, "implicit-cpu": theirs}
    calls = {
        "recommend": lambda m: m.recommend(users, liked, N=N, filter_already_liked_items=True),
        "similar_items": lambda m: m.similar_items(items, N=N),
    }
    times = {(q, e): [] for q in calls for e in models}
    for round_ in range(rounds + 1):  # the first round warms up and checks
        for query, call in calls.items():
            answers = {}
            for engine, model in models.items():
                context = engine_context(engine) if engine.startswith("implicit") else None
                seconds, answers[engine] = _timed(lambda: call(model), context)
                if round_:
                    times[(query, engine)].append(seconds)
            if not round_:
                _check(f"{name} f{factors} {query}", answers["als-cpu"], answers["implicit-cpu"])
    result = {"dataset": name, "users": n_users, "items": n_items, "factors": factors}
    for query in calls:
        ours, theirs = times[(query, "als-cpu")], times[(query, "implicit-cpu")]
        result[query] = {
            "als_s": statistics.median(ours),
            "implicit_s": statistics.median(theirs),
            "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
            "median_ratio": statistics.median(a / b for a, b in zip(ours, theirs, strict=True)),
            "als_runs": ours,
            "implicit_runs": theirs,
        }
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.query_race")
    parser.add_argument("--datasets", nargs="+", default=["lastfm-2k", "synthetic-30k-items"])
    parser.add_argument("--factors", nargs="+", type=int, default=[128])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = []
    print("| data set | items | f | query | als s | implicit s | als ÷ implicit | per round |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name in args.datasets:
        for factors in args.factors:
            row = race(name, factors, args.rounds)
            results.append(row)
            for query in ("recommend", "similar_items"):
                r = row[query]
                print(
                    f"| {name} | {row['items']:,} | {factors} | {query} | {r['als_s']:.4f} | "
                    f"{r['implicit_s']:.4f} | {r['ratio_of_medians']:.2f}x | "
                    f"{r['median_ratio']:.2f}x |",
                    flush=True,
                )
    if args.out:
        report = {
            "command": "python -m benchmarks.query_race " + " ".join(argv or sys.argv[1:]),
            "date": utc_now(),
            "machine": machine_info(),
            "versions": versions(),
            "blas": blas_info(),
            "results": results,
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
