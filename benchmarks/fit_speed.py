"""Fit time per iteration: our Numba backend against implicit, measured in the same run.

Usage::

    python -m benchmarks.fit_speed --factors 64 128 --threads 2 --out benchmarks/results

Builds a power-law users x items matrix (default 6,000 x 3,700 with about 600k non-zeros,
the shape of MovieLens-1M), fits both engines with the same seed and parameters, and reports
the median seconds per iteration (after one warm-up fit), the ratio ours / implicit, and the
Numba compile time on first call, cold (empty cache) and cached, each measured in a fresh
subprocess. Writes JSON and markdown named after the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse


def power_law_matrix(n_users, n_items, nnz, seed=0):
    """Zipf-like user activity and item popularity, weights 1..5, duplicates removed."""
    rng = np.random.default_rng(seed)
    user_p = 1.0 / np.arange(1, n_users + 1) ** 0.8
    item_p = 1.0 / np.arange(1, n_items + 1) ** 0.9
    # draw extra pairs so that about `nnz` distinct ones remain
    draws = int(nnz * 1.9)
    users = rng.permutation(n_users)[rng.choice(n_users, draws, p=user_p / user_p.sum())]
    items = rng.permutation(n_items)[rng.choice(n_items, draws, p=item_p / item_p.sum())]
    keys = np.unique(users.astype(np.int64) * n_items + items)[:nnz]
    keys = rng.permutation(keys)[:nnz]
    weights = rng.integers(1, 6, len(keys)).astype(np.float32)
    return scipy.sparse.csr_matrix(
        (weights, (keys // n_items, keys % n_items)), shape=(n_users, n_items)
    )


def seconds_per_iteration(make_model, user_items, iterations):
    """Median seconds of one ALS iteration over a fit of ``iterations``, after a warm-up."""
    make_model(1).fit(user_items, show_progress=False)
    times = []
    model = make_model(iterations)
    model.fit(user_items, show_progress=False, callback=lambda i, s, loss: times.append(s))
    return statistics.median(times), times


COMPILE_PROBE = """
import time, numpy as np, scipy.sparse as sp
start = time.perf_counter()
from als import AlternatingLeastSquares
m = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=0)
AlternatingLeastSquares(factors=8, iterations=1, backend="cpu", random_state=0).fit(
    m, show_progress=False
).recommend(0, m[0])
print(time.perf_counter() - start)
"""


def compile_times():
    """First-call seconds (import + compile/load + tiny fit) with an empty, then a warm cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        runs = []
        for _ in range(2):
            out = subprocess.run(
                [sys.executable, "-c", COMPILE_PROBE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(float(out.stdout.strip().splitlines()[-1]))
    return {"cold_s": runs[0], "cached_s": runs[1]}


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

    import implicit
    import numba
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS
    from threadpoolctl import threadpool_limits

    from als import AlternatingLeastSquares

    user_items = power_law_matrix(args.users, args.items, args.nnz)
    print(f"matrix {user_items.shape[0]:,} x {user_items.shape[1]:,}, {user_items.nnz:,} nnz")
    results = []
    for factors in args.factors:
        common = dict(factors=factors, random_state=0, num_threads=args.threads)

        def ours(iterations, common=common):
            return AlternatingLeastSquares(
                iterations=iterations, backend="cpu", cg_steps=args.cg_steps, **common
            )

        def theirs(iterations, common=common):
            model = ImplicitALS(iterations=iterations, **common)
            model.cg_steps = args.cg_steps
            return model

        # implicit asks for single-threaded BLAS; give it that, as its docs recommend
        with threadpool_limits(1, "blas"):
            implicit_s, implicit_all = seconds_per_iteration(theirs, user_items, args.iterations)
        als_s, als_all = seconds_per_iteration(ours, user_items, args.iterations)
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

    report = {
        "command": "python -m benchmarks.fit_speed " + " ".join(argv or sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            "numpy": np.__version__,
            "numba": numba.__version__,
            "implicit": implicit.__version__,
        },
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
