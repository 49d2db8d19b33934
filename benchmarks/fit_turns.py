"""Fit seconds per iteration of als and implicit on the CPU, the engines taking turns.

Usage::

    python -m benchmarks.fit_turns --datasets ml-1m lastfm-2k --factors 32 128 512 \\
        --rounds 3 --iterations 3 --threads 2 --out benchmarks/results --tag unset
    OPENBLAS_CORETYPE=Haswell python -m benchmarks.fit_turns ... --tag haswell

On a busy machine one engine timed after the other measures the load as much as the
engines. Here, per data set and factor count, both engines fit once untimed (compile or
cache load), then ``--rounds`` times each, in alternating order (als, implicit; implicit,
als; ...), ``--iterations`` timed iterations per fit (``benchmarks.common.
seconds_per_iteration``). The ratio is the median of every timed iteration of als over that
of implicit. Also recorded: the cold and cached first fit + query of a tiny model in fresh
processes (``benchmarks.common.compile_times``), the BLAS libraries and kernel in use
(threadpoolctl, ``OPENBLAS_CORETYPE``), the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from benchmarks.common import (
    compile_times,
    engine_context,
    load_dataset,
    machine_info,
    machine_slug,
    make_model,
    seconds_per_iteration,
    utc_now,
    versions,
)

ENGINES = ("als-cpu", "implicit-cpu")


def timed_iterations(engine, user_items, factors, iterations, threads, cg_steps):
    """Every timed iteration's seconds of one fit (see ``seconds_per_iteration``)."""

    def make(n):
        return make_model(engine, factors, n, threads=threads, cg_steps=cg_steps)

    with engine_context(engine):
        _, times, _ = seconds_per_iteration(make, user_items, iterations)
    return times


def measure(name, factors, args):
    user_items = load_dataset(name)
    for engine in ENGINES:  # compile / cache load, untimed
        timed_iterations(engine, user_items, factors, 1, args.threads, args.cg_steps)
    times = {engine: [] for engine in ENGINES}
    for round_ in range(args.rounds):
        order = ENGINES if round_ % 2 == 0 else ENGINES[::-1]
        for engine in order:
            times[engine] += timed_iterations(
                engine, user_items, factors, args.iterations, args.threads, args.cg_steps
            )
    medians = {engine: statistics.median(values) for engine, values in times.items()}
    return {
        "dataset": name,
        "factors": factors,
        "median_s_per_iteration": medians,
        "ratio_als_over_implicit": medians["als-cpu"] / medians["implicit-cpu"],
        "times_s": times,
    }


def markdown(report):
    lines = [
        f"# Fit, engines taking turns ({report['when']})",
        "",
        f"Command: `{report['command']}`",
        f"Machine: {json.dumps(report['machine'])}",
        f"Versions: {json.dumps(report['versions'])}",
        f"Load average before / after: {report['load_before']} / {report['load_after']}",
        f"Also running: {report['also_running']}",
        f"Cold / cached first fit + query (tiny model, fresh processes): "
        f"{report['compile']['cold_s']:.2f} s / {report['compile']['cached_s']:.2f} s",
        "",
        "| data | factors | als s/it | implicit s/it | als / implicit |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        medians = row["median_s_per_iteration"]
        lines.append(
            f"| {row['dataset']} | {row['factors']} | {medians['als-cpu']:.3f} "
            f"| {medians['implicit-cpu']:.3f} | {row['ratio_als_over_implicit']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ml-1m", "lastfm-2k"])
    parser.add_argument("--factors", nargs="+", type=int, default=[32, 128, 512])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--also-running", default="unknown", help="recorded as given")
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON + markdown")
    parser.add_argument("--tag", default="", help="added to the result files' names")
    parser.add_argument("--no-compile-probe", action="store_true")
    args = parser.parse_args(argv)
    report = {
        "when": utc_now(),
        "command": "python -m benchmarks.fit_turns " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "versions": versions(),
        "load_before": os.getloadavg(),
        "also_running": args.also_running,
        "compile": (
            {"cold_s": float("nan"), "cached_s": float("nan")}
            if args.no_compile_probe
            else compile_times()
        ),
        "rows": [],
    }
    for name in args.datasets:
        for factors in args.factors:
            row = measure(name, factors, args)
            report["rows"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "times_s"}), flush=True)
    report["load_after"] = os.getloadavg()
    text = markdown(report)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"fit-turns-{machine_slug()}-{report['when'][:10]}"
        stem += f"-{args.tag}" if args.tag else ""
        (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / f"{stem}.md").write_text(text)
    return report


if __name__ == "__main__":
    main()
