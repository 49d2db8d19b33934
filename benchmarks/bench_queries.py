"""Query speed: ``recommend`` for 1,000 users and ``similar_items`` for 1,000 items, batched.

Every engine ranks with a model it fitted itself (same seed and parameters, a few
iterations), and each answer is checked before its time counts: N valid ids per row, best
first, no already-liked item, and every item its own nearest neighbour.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import engine_context, synchronizer
from benchmarks.suite import ROUNDS, describe

BATCH = 1000
N = 10


def _sample(count, size, seed=0):
    """``size`` distinct ids below ``count`` (all of them when there are fewer), sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, min(size, count), replace=False)).astype(np.int32)


def _check_ranking(ids, scores, count, n_items, engine):
    assert ids.shape == (count, N) and scores.shape == (count, N), f"{engine}: shape {ids.shape}"
    assert ((ids >= 0) & (ids < n_items)).all(), f"{engine} returned ids out of range"
    assert (np.diff(scores, axis=1) <= 1e-6).all(), f"{engine} returned scores out of order"


def test_recommend_batch(benchmark, engine, dataset, user_items, factors, trained_model):
    users = _sample(user_items.shape[0], BATCH)
    liked = user_items[users]
    sync = synchronizer(engine)
    describe(benchmark, engine, dataset, user_items, factors, queries=len(users), N=N)

    def recommend():
        result = trained_model.recommend(users, liked, N=N, filter_already_liked_items=True)
        sync()
        return result

    with engine_context(engine):
        ids, scores = recommend()  # warm-up, and the answer we check
        _check_ranking(ids, scores, len(users), user_items.shape[1], engine)
        for row, (user_ids, start, stop) in enumerate(
            zip(ids, liked.indptr[:-1], liked.indptr[1:], strict=True)
        ):
            already = set(liked.indices[start:stop].tolist())
            assert not already & set(user_ids.tolist()), f"{engine} recommended a liked item"
            assert len(set(user_ids.tolist())) == N, f"{engine} repeated an item in row {row}"
        benchmark.pedantic(recommend, rounds=ROUNDS, iterations=1, warmup_rounds=0)


def test_similar_items_batch(benchmark, engine, dataset, user_items, factors, trained_model):
    items = _sample(user_items.shape[1], BATCH, seed=1)
    sync = synchronizer(engine)
    describe(benchmark, engine, dataset, user_items, factors, queries=len(items), N=N)

    def similar():
        result = trained_model.similar_items(items, N=N)
        sync()
        return result

    with engine_context(engine):
        ids, scores = similar()
        _check_ranking(ids, scores, len(items), user_items.shape[1], engine)
        # cosine similarity peaks at the item itself; a few ties (e.g. items with identical
        # factors) may put a twin first
        itself = np.mean(ids[:, 0] == items)
        assert itself >= 0.99, f"{engine}: only {itself:.1%} of items are their own nearest"
        benchmark.pedantic(similar, rounds=ROUNDS, iterations=1, warmup_rounds=0)
