"""Time to quality: held-out NDCG@10 against fit seconds, als CG vs als iALS++ vs implicit.

Usage::

    python -m benchmarks.time_to_quality [--dataset ml-1m] [--factors 128 256]
        [--iterations 15] [--block-size 64] [--out benchmarks/results] [--tag TAG]

One 80/20 split (``als.evaluation.train_test_split``, seed 0) of the data set's raw weights.
For every factor count, the engines take turns: each fits ``iterations`` iterations after an
untimed one-iteration warm-up (Numba compile or cache load), and after every iteration the
callback scores NDCG@10 on the held-out part. The clock stops during the scoring: both
libraries time an iteration from its start to the callback. The target of issue 14: the
seconds iALS++ needs to reach the NDCG@10 implicit's CG has after all its iterations, as a
fraction of implicit's seconds.

Writes ``OUT/time-to-quality-<machine>-<date>[-TAG].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import (
    DEFAULTS,
    ROOT,
    engine_context,
    load_dataset,
    machine_info,
    machine_slug,
    make_model,
    utc_now,
    versions,
)

#: label -> (engine, extra model parameters)
VARIANTS = {
    "als CG": ("als-cpu", {}),
    "als iALS++": ("als-cpu", {"solver": "ials++"}),
    "implicit CG": ("implicit-cpu", {}),
}


def curve(label, factors, iterations, block_size, train, test):
    """[(cumulative seconds, NDCG@10)] after each iteration of one variant."""
    from als.evaluation import ndcg_at_k

    engine, extra = VARIANTS[label]
    if "solver" in extra:
        extra = {**extra, "block_size": block_size}

    def build(n):
        model = make_model(engine, factors, n)
        for name, value in extra.items():
            setattr(model, name, value)
        return model

    points = []
    elapsed = [0.0]

    def score(iteration, seconds, loss):
        elapsed[0] += seconds
        ndcg = ndcg_at_k(model, train, test, K=10, show_progress=False)
        points.append((elapsed[0], float(ndcg)))

    with engine_context(engine):
        build(1).fit(train, show_progress=False)
        model = build(iterations)
        model.fit(train, show_progress=False, callback=score)
    return points


#: NDCG within this fraction of the target counts as reaching it: als CG and implicit compute
#: the same factors to float32 rounding, whose NDCG differ in the fourth digit
REACH_TOLERANCE = 0.002


def reach(points, target):
    """Seconds at the first point whose NDCG reaches ``target`` (None if none does)."""
    floor = target * (1 - REACH_TOLERANCE)
    return next((seconds for seconds, ndcg in points if ndcg >= floor), None)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_to_quality")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--factors", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)

    from als.evaluation import train_test_split

    train, test = train_test_split(load_dataset(args.dataset), 0.8, random_state=0)
    results = {}
    for factors in args.factors:
        curves = {
            label: curve(label, factors, args.iterations, args.block_size, train, test)
            for label in VARIANTS
        }
        implicit_seconds, implicit_ndcg = curves["implicit CG"][-1]
        results[factors] = {
            "curves": curves,
            "target_ndcg": implicit_ndcg,
            "implicit_seconds": implicit_seconds,
            "seconds_to_target": {label: reach(p, implicit_ndcg) for label, p in curves.items()},
        }
        for label, seconds in results[factors]["seconds_to_target"].items():
            ratio = "never" if seconds is None else f"{seconds / implicit_seconds:.2f}x"
            print(f"f={factors} {label}: reaches {implicit_ndcg:.4f} at {ratio}", flush=True)

    date = utc_now()
    command = "python -m benchmarks.time_to_quality " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    report = {
        "command": command,
        "date": date,
        "machine": machine_info(),
        "versions": versions(),
        "dataset": args.dataset,
        "params": {**DEFAULTS, "iterations": args.iterations, "block_size": args.block_size},
        "results": results,
    }
    lines = [
        f"# Time to quality on {args.dataset}: held-out NDCG@10 against fit seconds",
        "",
        f"- command: `{command}`",
        f"- date: {date}; machine: {report['machine']['node']}, {report['machine']['processor']}",
        f"- versions: {report['versions']}",
        f"- parameters: {report['params']}; 80/20 split, seed 0; scoring time not counted",
        "",
    ]
    for factors, result in results.items():
        lines += [
            f"## {factors} factors",
            "",
            f"Target: implicit's NDCG@10 after {args.iterations} iterations, "
            f"{result['target_ndcg']:.4f}, reached in {result['implicit_seconds']:.2f} s.",
            "",
            "| variant | seconds to target | ÷ implicit | final NDCG@10 | final seconds |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, points in result["curves"].items():
            seconds = result["seconds_to_target"][label]
            ratio = "–" if seconds is None else f"{seconds / result['implicit_seconds']:.2f}"
            shown = "never" if seconds is None else f"{seconds:.2f}"
            final_s, final_ndcg = points[-1]
            lines.append(f"| {label} | {shown} | {ratio} | {final_ndcg:.4f} | {final_s:.2f} |")
        lines += ["", "NDCG@10 per iteration (cumulative seconds):", ""]
        for label, points in result["curves"].items():
            lines.append(f"- {label}: " + ", ".join(f"{s:.2f}s {n:.4f}" for s, n in points))
        lines.append("")
    stem = args.out / (
        f"time-to-quality-{machine_slug()}-{date[:10]}{'-' + args.tag if args.tag else ''}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines))
    print(f"wrote {stem}.json and .md")
    return report


if __name__ == "__main__":
    main()
