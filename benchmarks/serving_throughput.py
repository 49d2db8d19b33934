"""Serving throughput: ``recommend`` for one user at a time, from 1, 2 and 4 threads at once.

Usage::

    python -m benchmarks.serving_throughput --threads 1 2 4 --out benchmarks/results

Fits one model on a power-law matrix (default 20,000 x 5,000, about 500k non-zeros, 64
factors, 3 iterations), then answers the same single-user queries (N=10, liked items
filtered) sequentially to get the reference answers, and again from a pool of 1, 2 and 4
threads sharing that one model. Every threaded answer is checked against the sequential one
(same ids and scores to float32 rounding) before its time counts; the BLAS thread limits
are checked to be what they were before. Reports queries per second (best of
``--rounds``) per thread count, and the speed-up over one thread. ``--num-threads`` sets
the model's Numba threads per query (default 1: the serving threads are the parallelism).

Timings depend on the machine and on what else runs on it: a result measured on a shared
or busy machine says so in its ``note`` (``--note``) and is not a speed claim.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from als import AlternatingLeastSquares
from benchmarks.common import machine_info, machine_slug, power_law_matrix, utc_now, versions

N = 10


def _blas_threads():
    return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info())


def _check(answers, reference):
    for (ids, scores), (expected_ids, expected) in zip(answers, reference, strict=True):
        # same kernels on the same inputs: only float32 rounding may differ
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
        if not np.array_equal(ids, expected_ids):
            tied = np.isclose(scores, expected, rtol=1e-5, atol=1e-6)
            assert tied.all(), "a threaded answer differs from the sequential one"


def measure(model, user_items, users, thread_counts, rounds):
    rows = [user_items[user] for user in users]

    def query(position):
        return model.recommend(int(users[position]), rows[position], N=N)

    query(0)  # compile or load the kernels before anything is timed
    reference = [query(position) for position in range(len(users))]
    blas_before = _blas_threads()
    results = []
    for threads in thread_counts:
        best = float("inf")
        with ThreadPoolExecutor(max_workers=threads) as pool:
            _check(list(pool.map(query, range(len(users)))), reference)  # warm-up and check
            for _ in range(rounds):
                start = time.perf_counter()
                answers = list(pool.map(query, range(len(users))))
                best = min(best, time.perf_counter() - start)
                _check(answers, reference)
        if _blas_threads() != blas_before:
            raise AssertionError("BLAS thread limits were not restored")
        results.append({"threads": threads, "queries": len(users), "seconds": best})
    single = results[0]["seconds"] * results[0]["threads"] if results else None
    for entry in results:
        entry["queries_per_second"] = entry["queries"] / entry["seconds"]
        if results[0]["threads"] == 1:
            entry["speedup_over_1_thread"] = single / entry["seconds"]
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--nnz", type=int, default=500_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--num-threads", type=int, default=1, help="Numba threads per query")
    parser.add_argument("--backend", default="cpu", choices=["cpu", "numpy", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--note", default="", help="what else ran on the machine, if anything")
    parser.add_argument("--out", type=Path, help="folder for the JSON result")
    args = parser.parse_args(argv)

    user_items = power_law_matrix(args.users, args.items, args.nnz, seed=0)
    model = AlternatingLeastSquares(
        factors=args.factors,
        iterations=args.iterations,
        random_state=0,
        backend=args.backend,
        num_threads=args.num_threads,
    ).fit(user_items, show_progress=False)
    users = np.random.default_rng(1).choice(user_items.shape[0], args.queries, replace=False)
    results = measure(model, user_items, users, args.threads, args.rounds)
    report = {
        "benchmark": "serving_throughput",
        "date": utc_now(),
        "machine": machine_info(),
        "versions": versions(),
        "note": args.note,
        "matrix": {"users": args.users, "items": args.items, "nnz": int(user_items.nnz)},
        "model": {
            "backend": model.backend_name,
            "factors": args.factors,
            "numba_threads_per_query": args.num_threads,
        },
        "N": N,
        "results": results,
    }
    for entry in results:
        print(
            f"{entry['threads']} thread(s): {entry['queries_per_second']:,.0f} queries/s"
            + (
                f" ({entry['speedup_over_1_thread']:.2f}x one thread)"
                if "speedup_over_1_thread" in entry
                else ""
            )
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"serving-{machine_slug()}-{report['date'][:10]}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
