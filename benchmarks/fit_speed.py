"""Fit time per iteration: our Numba backend against implicit, measured in the same run.

Usage::

    python -m benchmarks.fit_speed --factors 64 128 --threads 2 --out benchmarks/results

Builds a power-law users x items matrix (default 6,000 x 3,700 with about 600k non-zeros,
the shape of MovieLens-1M), fits both engines with the same seed and parameters, and reports
the median seconds per iteration (after one warm-up fit; see
``benchmarks.common.seconds_per_iteration``), the ratio ours / implicit, and the
Numba compile time on first call, cold (empty cache) and cached, each measured in a fresh
subprocess. Writes JSON and markdown named after the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import (
    compile_times,
    engine_context,
    machine_info,
    make_model,
    power_law_matrix,
    seconds_per_iteration,
    utc_now,
    versions,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=6000)
    parser.add_argument("--items", type=int, default=3700)
    parser.add_argument("--nnz", type=int, default=600_000)
    parser.add_argument("--factors", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON + markdown")
    args = parser.parse_args(argv)

    user_items = power_law_matrix(args.users, args.items, args.nnz)
    print(f"matrix {user_items.shape[0]:,} x {user_items.shape[1]:,}, {user_items.nnz:,} nnz")
    params = {"threads": args.threads, "cg_steps": args.cg_steps}
    results = []
    for factors in args.factors:
        timings = {}
        for engine in ("implicit-cpu", "als-cpu"):

            def make(iterations, engine=engine, factors=factors):
                return make_model(engine, factors, iterations, **params)

            # implicit asks for single-threaded BLAS; give it that, as its docs recommend
            with engine_context(engine):
                median, times, _ = seconds_per_iteration(make, user_items, args.iterations)
            timings[engine] = (median, times)
        (als_s, als_all), (implicit_s, implicit_all) = timings["als-cpu"], timings["implicit-cpu"]
        row = {
            "factors": factors,
            "als_cpu_s_per_iter": als_s,
            "implicit_s_per_iter": implicit_s,
            "ratio_als_over_implicit": als_s / implicit_s,
            "als_all": als_all,
            "implicit_all": implicit_all,
        }
        results.append(row)
        print(
            f"factors {factors:4d}: als cpu {als_s:.4f} s/iter, implicit {implicit_s:.4f} "
            f"s/iter, ratio {als_s / implicit_s:.2f}x"
        )
    compile = compile_times()
    print(f"numba first call: cold {compile['cold_s']:.2f} s, cached {compile['cached_s']:.2f} s")

    found = versions()
    report = {
        "command": "python -m benchmarks.fit_speed " + " ".join(argv or sys.argv[1:]),
        "date": utc_now(),
        "machine": machine_info(),
        "versions": {name: found.get(name) for name in ("numpy", "numba", "implicit")},
        "matrix": {
            "users": user_items.shape[0],
            "items": user_items.shape[1],
            "nnz": user_items.nnz,
        },
        "params": {
            "cg_steps": args.cg_steps,
            "threads": args.threads,
            "iterations": args.iterations,
        },
        "results": results,
        "numba_first_call": compile,
    }
    if args.out:
        write_report(report, args.out)
    return report


def write_report(report, folder):
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"fit-speed-{report['machine']['node'] or 'machine'}-{report['date'][:10]}"
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Fit speed: als cpu (Numba) vs implicit {report['versions']['implicit']}",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; machine: {report['machine']}",
        f"- versions: {report['versions']}",
        f"- matrix: {report['matrix']}; params: {report['params']}",
        "",
        "| factors | als cpu s/iter | implicit s/iter | als / implicit |",
        "|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['factors']} | {row['als_cpu_s_per_iter']:.4f} | "
            f"{row['implicit_s_per_iter']:.4f} | {row['ratio_als_over_implicit']:.2f}x |"
        )
    compile = report["numba_first_call"]
    lines += [
        "",
        f"Numba first call (import + compile or cache load + a tiny fit and recommend): cold "
        f"{compile['cold_s']:.2f} s, cached {compile['cached_s']:.2f} s.",
    ]
    (folder / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {folder / stem}.json and .md")


if __name__ == "__main__":
    main()
