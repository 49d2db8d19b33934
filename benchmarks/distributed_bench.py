"""Seconds per iteration and bytes moved per iteration of the Dask fit, against worker count.

Usage::

    python -m benchmarks.distributed_bench --workers 1 2 --out benchmarks/results

For every worker count it starts a ``LocalCluster`` (processes, one Dask thread and one
Numba thread per worker), fits a power-law matrix with :func:`als.distributed.fit_distributed`
and records, per iteration, the wall time and the bytes the workers sent each other (the
sum of every worker's ``transfer_outgoing_bytes_total``, read with ``client.run``). The
first iteration (loading the cached Numba kernels, fetching the data blocks) is left out of
the median. The single-machine fit with the same thread budget is timed beside it. The
bytes are compared with the design's formula:

    per half-iteration solving side S (n_S rows) with W workers:
      assemble the new S factors on one worker     (W - 1) / W * n_S * f * 4
      every other worker fetches that full copy    (W - 1) * n_S * f * 4
      Gram partials to the tree, float64           (B - 1) * f^2 * 8 (at most)
      the finished Gram to the solving workers     (W - 1) * f^2 * 4 (at most)
    per iteration: the sum over S = users, items.

Writes ``distributed-<machine>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from als import AlternatingLeastSquares
from als.distributed import fit_distributed, partition_interactions
from benchmarks.common import machine_info, machine_slug, power_law_matrix, utc_now, versions


def predicted_bytes(n_users, n_items, factors, workers, blocks):
    """The formula above, for one iteration (both halves), in bytes."""
    total = 0.0
    for rows in (n_users, n_items):
        total += (workers - 1) / workers * rows * factors * 4
        total += (workers - 1) * rows * factors * 4
        total += (blocks - 1) * factors**2 * 8 + (workers - 1) * factors**2 * 4
    return total


def _sent_bytes(dask_worker):
    return dask_worker.transfer_outgoing_bytes_total


def run_workers(workers, user_items, params, iterations):
    from distributed import Client, LocalCluster, wait

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit="2GiB",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        blocked = partition_interactions(client, user_items)
        wait(blocked.user_blocks + blocked.item_blocks)
        seconds, sent = [], []

        def total_sent():
            return sum(client.run(_sent_bytes).values())

        before = [total_sent()]

        def record(iteration, elapsed, loss):
            seconds.append(elapsed)
            now = total_sent()
            sent.append(now - before[0])
            before[0] = now

        model = AlternatingLeastSquares(**params, iterations=iterations)
        fit_distributed(client, model, blocked, show_progress=False, callback=record)
    return model, seconds, sent


def run_single(user_items, params, iterations):
    seconds = []
    model = AlternatingLeastSquares(**{**params, "num_threads": 0}, iterations=iterations)
    model.fit(user_items, show_progress=False, callback=lambda i, s, loss: seconds.append(s))
    return model, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--nnz", type=int, default=3_000_000)
    parser.add_argument("--factors", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON + markdown")
    args = parser.parse_args(argv)

    user_items = power_law_matrix(args.users, args.items, args.nnz)
    n_users, n_items = user_items.shape
    print(f"matrix {n_users:,} x {n_items:,}, {user_items.nnz:,} nnz, {args.factors} factors")
    params = {"factors": args.factors, "random_state": 0, "backend": "cpu", "num_threads": 1}

    single, single_seconds = run_single(user_items, params, args.iterations)
    rows = []
    for workers in args.workers:
        model, seconds, sent = run_workers(workers, user_items, params, args.iterations)
        difference = float(
            np.abs(model.item_factors - single.item_factors).max()
            / np.abs(single.item_factors).max()
        )
        steady_seconds, steady_sent = seconds[1:] or seconds, sent[1:] or sent
        row = {
            "workers": workers,
            "blocks": workers,
            "seconds_per_iteration": statistics.median(steady_seconds),
            "iteration_seconds": seconds,
            "bytes_sent_per_iteration": statistics.median(steady_sent),
            "iteration_bytes_sent": sent,
            "predicted_bytes_per_iteration": predicted_bytes(
                n_users, n_items, args.factors, workers, workers
            ),
            "max_difference_vs_single_machine": difference,
        }
        rows.append(row)
        print(
            f"{workers} worker(s): {row['seconds_per_iteration']:.3f} s/iteration, "
            f"{row['bytes_sent_per_iteration'] / 2**20:.2f} MiB sent per iteration "
            f"(formula {row['predicted_bytes_per_iteration'] / 2**20:.2f} MiB), "
            f"factors within {difference:.1e} of one machine"
        )
    import dask
    import distributed

    result = {
        "benchmark": "distributed",
        "date": utc_now(),
        "command": "python -m benchmarks.distributed_bench " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "versions": {
            **versions(),
            "dask": dask.__version__,
            "distributed": distributed.__version__,
        },
        "matrix": {"users": n_users, "items": n_items, "nnz": int(user_items.nnz)},
        "factors": args.factors,
        "iterations": args.iterations,
        "single_machine": {
            "threads": "all cores",
            "seconds_per_iteration": statistics.median(single_seconds[1:] or single_seconds),
            "iteration_seconds": single_seconds,
        },
        "distributed": rows,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"distributed-{machine_slug()}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {stem}.json and {stem}.md")
    return result


def markdown(result):
    matrix, machine = result["matrix"], result["machine"]
    lines = [
        "# Distributed fit: seconds and bytes per iteration against worker count",
        "",
        f"`{result['command']}` on {machine['node']} ({machine['processor']}, "
        f"{machine['cpu_count']} cores), {result['date']}.",
        "",
        f"Power-law matrix {matrix['users']:,} users x {matrix['items']:,} items, "
        f"{matrix['nnz']:,} interactions, {result['factors']} factors, CG 3 steps; "
        "LocalCluster of worker processes with one Dask thread and one Numba thread each, "
        "one block per worker and side. Median over iterations 2..n.",
        "",
        "| engine | s / iteration | MiB sent / iteration (measured) | MiB (formula) "
        "| max diff vs one machine |",
        "|---|---|---|---|---|",
        f"| one machine, all cores | {result['single_machine']['seconds_per_iteration']:.3f} "
        "| - | - | - |",
    ]
    for row in result["distributed"]:
        lines.append(
            f"| Dask, {row['workers']} worker(s) | {row['seconds_per_iteration']:.3f} "
            f"| {row['bytes_sent_per_iteration'] / 2**20:.2f} "
            f"| {row['predicted_bytes_per_iteration'] / 2**20:.2f} "
            f"| {row['max_difference_vs_single_machine']:.1e} |"
        )
    versions_text = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    lines += ["", f"Versions: {versions_text}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
