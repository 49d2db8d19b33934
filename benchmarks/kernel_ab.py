"""The Numba solve of two checkouts' ``backends`` in one process, calls taking turns.

Usage::

    python -m benchmarks.kernel_ab --old /tmp/old-main --dataset ml-1m --factors 64 --repeats 30

A sharper check than ``benchmarks.refactor_speed`` on a busy machine: both checkouts'
``backends`` packages are copied under other names (``oldbackends``, ``newbackends``) and
imported side by side, so one process times one iteration's two solves (users, then items;
``cg_steps=3``, one thread unless ``--threads``) with each, the two taking turns ``--repeats``
times, in CPU time (wall time with more than one thread).
It also checks that after two iterations both give bit-identical factors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def iteration(backend, Cui, Ciu, X, Y):
    backend.solve(Cui, X, Y, backend.gram(Y, 0.01), 3)
    backend.solve(Ciu, Y, X, backend.gram(X, 0.01), 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, default=ROOT)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=1, help="kernel threads; above 1, wall seconds are timed"
    )
    args = parser.parse_args(argv)
    Cui = load_dataset(args.dataset).astype(np.float32)
    Ciu = Cui.T.tocsr()
    rng = np.random.default_rng(0)
    X0 = rng.random((Cui.shape[0], args.factors), dtype=np.float32) * np.float32(0.01)
    Y0 = rng.random((Cui.shape[1], args.factors), dtype=np.float32) * np.float32(0.01)
    with tempfile.TemporaryDirectory() as tmp:
        engines = {}
        for name, checkout in (("old", args.old), ("new", args.new)):
            shutil.copytree(
                checkout / "backends",
                Path(tmp) / f"{name}backends",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        sys.path.insert(0, tmp)
        for name in ("old", "new"):
            module = importlib.import_module(f"{name}backends.numba_cpu")
            engines[name] = module.NumbaBackend(num_threads=args.threads)
        finals = {}
        for name, backend in engines.items():  # compile, and check the answers agree
            X, Y = X0.copy(), Y0.copy()
            with backend.threads():
                iteration(backend, Cui, Ciu, X, Y)
                iteration(backend, Cui, Ciu, X, Y)
            finals[name] = (X, Y)
        times = {name: [] for name in engines}
        # CPU time is steadier on a shared machine, but sums over threads
        clock = time.process_time if args.threads == 1 else time.perf_counter
        for repeat in range(args.repeats):
            for name in ("old", "new") if repeat % 2 == 0 else ("new", "old"):
                X, Y = X0.copy(), Y0.copy()
                with engines[name].threads():
                    start = clock()
                    iteration(engines[name], Cui, Ciu, X, Y)
                    times[name].append(clock() - start)
    same = all(np.array_equal(a, b) for a, b in zip(finals["old"], finals["new"], strict=True))
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "dataset": args.dataset,
        "factors": args.factors,
        "repeats": args.repeats,
        "threads": args.threads,
        "bit_identical_after_2_iterations": same,
        "old_median_s": medians["old"],
        "new_median_s": medians["new"],
        "ratio_median_new_over_old": medians["new"] / medians["old"],
        "ratio_min_new_over_old": min(times["new"]) / min(times["old"]),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
