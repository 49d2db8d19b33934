"""Fit speed: one ALS iteration, every engine, every data set (``pytest benchmarks/``).

Each round is one call of ``fit`` with ``iterations=1``, warm-started from the factors of
the previous round (as implicit and als both do when factors are present), so a round also
carries the per-call work both libraries do before iterating: validation and the transpose
of ``user_items`` (and, on a GPU, the copy to the device). The first fit, with Numba's
compile or cache load, is not timed. ``python -m benchmarks.compare`` times iterations
without that per-call work.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import (
    DEFAULTS,
    engine_context,
    iteration_flops,
    make_model,
    synchronizer,
)
from benchmarks.suite import ROUNDS, describe, host


def test_fit_iteration(benchmark, engine, dataset, user_items, factors):
    with engine_context(engine):  # implicit checks the BLAS limit when constructed
        model = make_model(engine, factors, 1)
    sync = synchronizer(engine)

    def one_iteration():
        model.fit(user_items, show_progress=False)
        sync()

    flops = iteration_flops(*user_items.shape, user_items.nnz, factors, DEFAULTS["cg_steps"])
    describe(benchmark, engine, dataset, user_items, factors, flops_per_iteration=flops)
    with engine_context(engine):
        one_iteration()  # warm-up: compile or cache load, initial factors
        benchmark.pedantic(one_iteration, rounds=ROUNDS, iterations=1, warmup_rounds=0)

    for side in (model.user_factors, model.item_factors):
        assert np.isfinite(host(side)).all(), f"{engine} gave non-finite factors on {dataset}"
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["gflops_at_median"] = flops / benchmark.stats.stats.median / 1e9
