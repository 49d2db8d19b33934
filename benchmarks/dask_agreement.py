"""How far the Dask fit is from the one-machine fit: factors and ranking metrics on ml-100k.

Usage::

    python -m benchmarks.dask_agreement --iterations 1 15 150 --out benchmarks/results

Holds out 20% of ml-100k (ratings as weights, ``random_state=0``), fits the ``cpu`` backend
on one machine and :func:`als.distributed.fit_distributed` on a local cluster of two worker
processes with the same parameters and seed (64 factors, one Numba thread each), and reports
for each iteration count the largest factor difference relative to the largest factor, the
relative Frobenius difference, and the largest difference of precision, MAP, NDCG and AUC at
10. Accuracy, not speed: the numbers do not depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np


def compare(client, train, test, iterations):
    from als import AlternatingLeastSquares
    from als.distributed import fit_distributed
    from als.evaluation import ranking_metrics_at_k

    params = dict(factors=64, iterations=iterations, random_state=0, backend="cpu", num_threads=1)
    single = AlternatingLeastSquares(**params).fit(train, show_progress=False)
    cluster = fit_distributed(client, AlternatingLeastSquares(**params), train, show_progress=False)
    row = {"iterations": iterations}
    for side in ("user_factors", "item_factors"):
        ours, theirs = getattr(cluster, side), getattr(single, side)
        row[f"{side}_max_difference_relative"] = float(
            np.abs(ours - theirs).max() / np.abs(theirs).max()
        )
        row[f"{side}_frobenius_relative"] = float(
            np.linalg.norm(ours - theirs) / np.linalg.norm(theirs)
        )
    one = ranking_metrics_at_k(single, train, test, K=10, show_progress=False)
    other = ranking_metrics_at_k(cluster, train, test, K=10, show_progress=False)
    row["metrics_single_machine"] = one
    row["metrics_largest_difference"] = max(abs(one[key] - other[key]) for key in one)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, nargs="+", default=[1, 15, 150])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    from dask.distributed import Client, LocalCluster

    from als.data import load
    from als.evaluation import train_test_split

    train, test = train_test_split(load("ml-100k").user_items, 0.8, random_state=0)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, memory_limit="1GiB", dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        rows = [compare(client, train, test, count) for count in args.iterations]
    for row in rows:
        print(json.dumps(row))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "dask-agreement-ml-100k.json"
        path.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
