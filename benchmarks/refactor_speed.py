"""Fit speed of two checkouts of als side by side: did a change slow the fit down?

Usage::

    git worktree add /tmp/old-main <commit>
    python -m benchmarks.refactor_speed --old /tmp/old-main --datasets ml-1m synthetic-10m \
        --factors 64 128 --repeats 5 --out benchmarks/results

Each (data set, factors) is fitted by the ``cpu`` backend of both checkouts in turn, each fit
in a fresh process that imports that checkout's ``als`` (``PYTHONPATH`` is the checkout),
``--repeats`` times, the order of the two alternating between repeats (old, new, new, old,
...) so that a drift in the machine's load falls on both alike. Every process reads the same
matrix from one ``.npz`` file, runs a warm-up fit of one iteration (Numba cache load), then
times ``--iterations`` iterations of a fit of ``iterations + 1`` (the first, with its set-up,
is left out; as ``benchmarks.common.seconds_per_iteration``). The report gives, per
checkout, the median over repeats of each process's median seconds per iteration, the ratio
new / old (for the wall clock and for the process's CPU time, which other work on a shared
machine disturbs less), and whether the two fits ended with the same factors. It records the
BLAS library and kernel (threadpoolctl) and ``OPENBLAS_CORETYPE``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse

from benchmarks.common import load_dataset, machine_info, run_probe, utc_now, versions

ROOT = Path(__file__).resolve().parents[1]

#: what one process runs: argv = matrix path, factors, iterations, threads
PROBE = """
import json, statistics, sys, time
import numpy as np, scipy.sparse
import als
from als import AlternatingLeastSquares

path, factors, iterations, threads = sys.argv[1], *map(int, sys.argv[2:5])
matrix = scipy.sparse.load_npz(path).tocsr()

def make(n):
    return AlternatingLeastSquares(
        factors=factors, iterations=n, regularization=0.01, alpha=1.0, random_state=0,
        backend="cpu", cg_steps=3, num_threads=threads,
    )

make(1).fit(matrix, show_progress=False)
stamps, cpu_stamps = [], []

def stamp(iteration, seconds, loss):
    stamps.append(time.perf_counter())
    cpu_stamps.append(time.process_time())

model = make(iterations + 1)
model.fit(matrix, show_progress=False, callback=stamp)
times = [float(t) for t in np.diff(stamps)]
cpu_times = [float(t) for t in np.diff(cpu_stamps)]
print(json.dumps({
    "als": als.__file__,
    "median_s": statistics.median(times),
    "times_s": times,
    "median_cpu_s": statistics.median(cpu_times),
    "cpu_times_s": cpu_times,
    "user_factors_sum": float(np.abs(model.user_factors).sum(dtype=np.float64)),
    "item_factors_sum": float(np.abs(model.item_factors).sum(dtype=np.float64)),
}))
"""


def blas_info():
    """The BLAS libraries NumPy and SciPy load, as threadpoolctl sees them."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS too)
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "version", "architecture", "threading_layer", "num_threads")
    return [
        {key: entry.get(key) for key in keys} | {"library": Path(entry["filepath"]).name}
        for entry in threadpool_info()
        if entry.get("user_api") == "blas"
    ]


def run(checkout, matrix_path, factors, iterations, threads):
    return json.loads(
        run_probe(PROBE, matrix_path, factors, iterations, threads, checkout=checkout)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout to compare against")
    parser.add_argument("--new", type=Path, default=ROOT, help="default: this checkout")
    parser.add_argument("--datasets", nargs="+", default=["ml-1m", "synthetic-10m"])
    parser.add_argument("--factors", type=int, nargs="+", default=[64])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON + markdown")
    args = parser.parse_args(argv)
    checkouts = {"old": args.old.resolve(), "new": args.new.resolve()}
    commits = {
        name: subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        for name, path in checkouts.items()
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            matrix = load_dataset(dataset)
            path = Path(tmp) / f"{dataset}.npz"
            scipy.sparse.save_npz(path, matrix, compressed=False)
            for factors in args.factors:
                runs = {name: [] for name in checkouts}
                for repeat in range(args.repeats):
                    order = ["old", "new"] if repeat % 2 == 0 else ["new", "old"]
                    for name in order:
                        result = run(checkouts[name], path, factors, args.iterations, args.threads)
                        runs[name].append(result)
                        print(
                            f"{dataset} f={factors} #{repeat} {name}: {result['median_s']:.4f} s"
                            f" wall, {result['median_cpu_s']:.4f} s CPU"
                        )
                medians = {n: statistics.median(r["median_s"] for r in runs[n]) for n in runs}
                cpu = {n: statistics.median(r["median_cpu_s"] for r in runs[n]) for n in runs}
                sums = {
                    n: (runs[n][0]["user_factors_sum"], runs[n][0]["item_factors_sum"])
                    for n in runs
                }
                rows.append(
                    {
                        "dataset": dataset,
                        "shape": list(matrix.shape),
                        "nnz": int(matrix.nnz),
                        "factors": factors,
                        "old_s_per_iter": medians["old"],
                        "new_s_per_iter": medians["new"],
                        "ratio_new_over_old": medians["new"] / medians["old"],
                        "old_cpu_s_per_iter": cpu["old"],
                        "new_cpu_s_per_iter": cpu["new"],
                        "cpu_ratio_new_over_old": cpu["new"] / cpu["old"],
                        "same_factors": bool(np.allclose(sums["old"], sums["new"], rtol=1e-6)),
                        "runs": runs,
                    }
                )
                print(
                    f"{dataset} f={factors}: new / old = {rows[-1]['ratio_new_over_old']:.3f} "
                    f"wall, {rows[-1]['cpu_ratio_new_over_old']:.3f} CPU"
                )
    report = {
        "command": "python -m benchmarks.refactor_speed " + " ".join(argv or sys.argv[1:]),
        "date": utc_now(),
        "machine": machine_info(),
        "load_average_at_end": os.getloadavg(),
        "commits": commits,
        "versions": {name: versions().get(name) for name in ("numpy", "scipy", "numba")},
        "blas": blas_info(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "params": {"iterations": args.iterations, "repeats": args.repeats, "threads": args.threads},
        "results": rows,
    }
    if args.out:
        write_report(report, args.out)
    return report


def write_report(report, folder):
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"refactor-speed-{report['machine']['node'] or 'machine'}-{report['date'][:10]}"
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    coretype = report["OPENBLAS_CORETYPE"]
    lines = [
        f"# Fit speed before and after a change: {report['commits']['old']} (old) vs "
        f"{report['commits']['new']} (new)",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; machine: {report['machine']}",
        f"- versions: {report['versions']}",
        f"- BLAS (threadpoolctl): {report['blas']}",
        f"- OPENBLAS_CORETYPE: {'unset' if coretype is None else coretype}",
        f"- params: {report['params']}; `cpu` backend, cg_steps=3, random_state=0, float32",
        f"- load average at the end: {report['load_average_at_end']}",
        "",
        "| data set | non-zeros | factors | old s/iter | new s/iter | new / old "
        "| old CPU s/iter | new CPU s/iter | new / old (CPU) | same factors |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['dataset']} | {row['nnz']:,} | {row['factors']} | "
            f"{row['old_s_per_iter']:.4f} | {row['new_s_per_iter']:.4f} | "
            f"{row['ratio_new_over_old']:.3f} | {row['old_cpu_s_per_iter']:.4f} | "
            f"{row['new_cpu_s_per_iter']:.4f} | {row['cpu_ratio_new_over_old']:.3f} | "
            f"{'yes' if row['same_factors'] else 'no'} |"
        )
    lines += [
        "",
        "Each s/iter is the median over the repeats of one process's median seconds per",
        "iteration (wall clock); CPU s/iter the same for the CPU time of the process (all its",
        "threads), which a busy shared machine disturbs less than the wall clock. The two",
        "checkouts took turns (old, new, new, old, ...).",
    ]
    (folder / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {folder / stem}.json and .md")


if __name__ == "__main__":
    main()
