"""The Numba fused top-k at chosen tile shapes, the shapes taking turns: what sized the rule.

Usage::

    python -m benchmarks.topk_tiles [--items 17632] [--factors 128] [--queries 500]
        [--threads 1] [--rounds 7] [--query-tiles 64 125 250 500] [--item-tiles 256 512 1024]

Random float32 factors and queries, k=10, no exclusions; BLAS single-threaded as the
backend runs it. Prints, per query tile, the best of ``--rounds`` milliseconds per item tile,
and the tiles ``backends.numba_cpu.topk_tiles`` picks for the same shape on this machine.
With one thread the numbers are one core's: the rate of one task's BLAS calls and selection.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.topk_tiles")
    parser.add_argument("--items", type=int, default=17632)
    parser.add_argument("--factors", type=int, default=128)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--query-tiles", nargs="+", type=int, default=[64, 125, 250, 500])
    parser.add_argument("--item-tiles", nargs="+", type=int, default=[256, 512, 1024])
    args = parser.parse_args(argv)

    import numba

    from als.backends import numba_kernels
    from als.backends.numba_cpu import NumbaBackend, topk_tiles

    rng = np.random.default_rng(0)
    factors = rng.standard_normal((args.items, args.factors), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.factors), dtype=np.float32)
    no_norms = np.zeros(0, np.float32)
    indptr, indices = np.zeros(args.queries + 1, np.int64), np.zeros(0, np.int32)
    excluded_for_all = np.zeros(args.items, np.bool_)
    ids = np.empty((args.queries, 10), np.int32)
    scores = np.empty((args.queries, 10), np.float32)

    def run(query_tile, item_tile):
        start = time.perf_counter()
        numba_kernels.fused_topk(
            queries, factors, no_norms, indptr, indices, excluded_for_all,
            query_tile, item_tile, ids, scores,
        )  # fmt: skip
        return time.perf_counter() - start

    shapes = [(q, w) for q in args.query_tiles for w in args.item_tiles]
    times = {shape: [] for shape in shapes}
    with NumbaBackend(num_threads=args.threads).threads():
        run(64, 64)  # compile or load from the cache
        for _ in range(args.rounds):
            for shape in shapes:
                times[shape].append(run(*shape))
        picked = topk_tiles(args.queries, args.factors, 4, numba.get_num_threads())
    print(f"{args.queries} queries x {args.items} items, {args.factors} factors, "
          f"{args.threads} thread(s); best of {args.rounds}, ms")  # fmt: skip
    for q in args.query_tiles:
        cells = " ".join(f"w{w} {min(times[(q, w)]) * 1e3:.1f}" for w in args.item_tiles)
        print(f"  query tile {q}: {cells}")
    print(f"topk_tiles picks {picked}")


if __name__ == "__main__":
    main()
