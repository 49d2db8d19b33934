"""CG task sizes against the rule in use: one half-iteration's solve per side, variants
taking turns in one process.

Usage::

    python -m benchmarks.task_sizing --dataset ml-1m --factors 256 512 \
        --variants 128:8192 64:8192 --repeats 7

The rule in use is ``backends.numba_cpu.task_limits``. A variant ``R:E`` keeps its cache
limit (``max_entries``) and changes the dense part: at least and at most ``R`` rows, the
minimum given up once a task holds ``E`` stored entries (``task_bounds``' ``min_rows``,
``max_rows`` and ``dense_entries``); ``R`` is cut to leave ``TASKS_PER_THREAD`` tasks per
thread of the machine, as the rule does. Each repeat times the rule in use, then every
variant, after one untimed solve, on random factors (2 threads unless ``--threads``,
``cg_steps=3``, float32); a variant's figure is the median over the repeats of its time
divided by the rule's in the same repeat, which cancels most of a shared machine's slow
spells. Prints one line per (factors, side).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from als.backends import numba_kernels
from als.backends.numba_cpu import (
    TASKS_PER_THREAD,
    NumbaBackend,
    prefetch_rows,
    task_limits,
)
from als.backends.task_pool import machine_threads
from benchmarks.common import load_dataset


def _variant(text):
    rows, entries = (int(value) for value in text.split(":"))
    return rows, entries


def _solve(backend, operands, X, bounds, prefetch, threads):
    indptr, indices, data, Y, YtY = operands
    X = X.copy()
    start = time.perf_counter()
    with backend.threads():
        numba_kernels.cg_solve(
            indptr, indices, data, X, Y, YtY, 3, bounds, X.dtype.type(0), X.dtype.type(1),
            np.zeros(0, X.dtype), prefetch, threads,
        )  # fmt: skip
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--factors", type=int, nargs="+", default=[256])
    parser.add_argument("--variants", type=_variant, nargs="+", default=[(128, 8192)])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    user_items = load_dataset(args.dataset).astype(np.float32)
    backend = NumbaBackend(args.threads)
    for factors in args.factors:
        for side, Cui in (("users", user_items), ("items", user_items.T.tocsr())):
            rng = np.random.default_rng(0)
            X = rng.random((Cui.shape[0], factors), dtype=np.float32) * np.float32(0.01)
            Y = rng.random((Cui.shape[1], factors), dtype=np.float32) * np.float32(0.01)
            YtY = backend.gram(Y, 0.01)
            indptr = Cui.indptr.astype(np.int64)
            operands = (indptr, Cui.indices.astype(np.int32), Cui.data, Y, YtY)
            prefetch = prefetch_rows(Y.shape[0], Y.shape[1] * Y.itemsize)
            # as NumbaBackend.solve plans them: for the machine's threads, not --threads
            limits = task_limits(Cui.shape[0], factors, 4, machine_threads())
            spread = max(1, Cui.shape[0] // (TASKS_PER_THREAD * machine_threads()))
            plans = {f"rule {limits}": numba_kernels.task_bounds(indptr, *limits)}
            for rows, entries in args.variants:
                rows = min(rows, spread)
                plans[f"{rows}:{entries}"] = numba_kernels.task_bounds(
                    indptr, rows, rows, limits[2], entries
                )
            # untimed: compiling (or loading) the kernel and first touches of the arrays
            _solve(backend, operands, X, plans[next(iter(plans))], prefetch, args.threads)
            times = {name: [] for name in plans}
            for _ in range(args.repeats):
                for name, bounds in plans.items():
                    times[name].append(_solve(backend, operands, X, bounds, prefetch, args.threads))
            rule = next(iter(plans))
            seconds = statistics.median(times[rule])
            parts = [f"{args.dataset} f{factors} {side}: {rule} {seconds:.3f} s"]
            for name in list(plans)[1:]:
                pairs = zip(times[name], times[rule], strict=True)
                ratio = statistics.median(a / b for a, b in pairs)
                parts.append(f"{name} {ratio:.3f} ({len(plans[name]) - 1} tasks)")
            print(" | ".join(parts), flush=True)


if __name__ == "__main__":
    main()
