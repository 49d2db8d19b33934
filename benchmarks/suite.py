"""Settings of the pytest-benchmark suites, read from the environment, and their helpers.

Environment variables choose the grid (the defaults keep a run to a few minutes on 2 cores):

- ``ALS_BENCH_LARGE=1`` adds the 10M and 50M non-zero synthetic matrices;
- ``ALS_BENCH_DATASETS=ml-1m,synthetic-1m`` picks data sets by name (overrides the above);
- ``ALS_BENCH_ENGINES=als-cpu,implicit-cpu`` picks engines (default: all four; those that
  cannot run here are skipped with the reason);
- ``ALS_BENCH_FACTORS=64,128`` (default 64) and ``ALS_BENCH_ROUNDS`` (default 5).
"""

from __future__ import annotations

import os

from benchmarks.common import DEFAULTS, ENGINES, dataset_names, host


def _env_list(name, default):
    value = os.environ.get(name, "").strip()
    return [part.strip() for part in value.split(",") if part.strip()] if value else default


LARGE = os.environ.get("ALS_BENCH_LARGE", "") not in ("", "0")
DATASETS = _env_list("ALS_BENCH_DATASETS", dataset_names(large=LARGE))
BENCH_ENGINES = _env_list("ALS_BENCH_ENGINES", list(ENGINES))
FACTORS = [int(f) for f in _env_list("ALS_BENCH_FACTORS", ["64"])]
ROUNDS = int(os.environ.get("ALS_BENCH_ROUNDS", "5"))
#: iterations of the models that the query benchmarks rank with
QUERY_MODEL_ITERATIONS = 3


def describe(benchmark, engine, dataset, user_items, factors, **extra):
    """Record what was measured in the benchmark's JSON (``--benchmark-json``)."""
    benchmark.group = f"{benchmark.name.split('[')[0]} {dataset} f{factors}"
    benchmark.extra_info.update(
        engine=engine,
        dataset=dataset,
        users=user_items.shape[0],
        items=user_items.shape[1],
        nnz=int(user_items.nnz),
        factors=factors,
        **{k: v for k, v in DEFAULTS.items() if k != "threads"},
        **extra,
    )


__all__ = ["BENCH_ENGINES", "DATASETS", "FACTORS", "ROUNDS", "describe", "host"]
