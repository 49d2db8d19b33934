"""Tests for ``als.evaluation``: splits and ranking metrics against ``implicit.evaluation``.

implicit is the oracle: the same model and the same split go through both libraries and the
metrics must agree to 1e-6. A per-user Python transcription of implicit's scoring loop is a
second oracle for the cases implicit cannot take (rows shorter than ``K``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from als import evaluation
from als.errors import ParameterWarning

implicit_evaluation = pytest.importorskip("implicit.evaluation")
implicit_als = pytest.importorskip("implicit.cpu.als")

# implicit warns when BLAS may use several threads; that is about speed, not these answers.
pytestmark = pytest.mark.filterwarnings("ignore:.*configured to use:RuntimeWarning")

METRICS = ("precision", "map", "ndcg", "auc")
N_USERS, N_ITEMS = 300, 200


def power_law_matrix(n_users=N_USERS, n_items=N_ITEMS, seed=0, dtype=np.float32):
    """Users with Zipf-distributed activity choosing items with power-law popularity."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    activity = rng.zipf(1.6, n_users).clip(1, 60)
    rows = np.repeat(np.arange(n_users), activity)
    cols = np.concatenate([rng.choice(n_items, a, replace=False, p=popularity) for a in activity])
    weights = rng.integers(1, 5, len(rows)).astype(dtype)
    return sp.csr_matrix((weights, (rows, cols)), shape=(n_users, n_items))


@pytest.fixture(scope="module")
def ratings():
    return power_law_matrix()


@pytest.fixture(scope="module")
def split(ratings):
    return implicit_evaluation.train_test_split(ratings, 0.8, random_state=42)


@pytest.fixture(scope="module")
def model(split):
    train, _ = split
    model = implicit_als.AlternatingLeastSquares(factors=8, iterations=5, random_state=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*configured to use", category=RuntimeWarning)
        model.fit(train, show_progress=False)
    return model


class RankedModel:
    """A model that returns fixed rankings: ``rankings[user]``, the first ``N`` columns.

    Rows may hold -1 padding; ``width`` truncates the returned rows to test short answers.
    """

    def __init__(self, rankings, width=None):
        self.rankings = np.asarray(rankings, dtype=np.int32)
        self.width = width

    def recommend(self, userid, user_items, N=10, filter_already_liked_items=True):
        ids = self.rankings[np.asarray(userid), :N]
        if self.width is not None:
            ids = ids[:, : self.width]
        return np.ascontiguousarray(ids), -np.arange(ids.shape[1], dtype=np.float32)[None, :]


def reference_metrics(model, train, test, K):
    """implicit's scoring loop, one user at a time, in plain Python."""
    n_items = test.shape[1]
    cg = 1.0 / np.log2(np.arange(2, K + 2))
    relevant = pr_div = mean_ap = ndcg = mean_auc = total = 0.0
    for u in range(test.shape[0]):
        likes = set(test.indices[test.indptr[u] : test.indptr[u + 1]].tolist())
        if not likes:
            continue
        ids, _ = model.recommend(np.array([u]), train[[u]], N=K)
        ids = list(ids[0]) + [-1] * (K - len(ids[0]))
        pr_div += min(K, len(likes))
        ap = hit = miss = auc = 0.0
        idcg = cg[: min(K, len(likes))].sum()
        n_pos, n_neg = len(likes), n_items - len(likes)
        for i in range(K):
            if ids[i] in likes:
                relevant += 1
                hit += 1
                ap += hit / (i + 1)
                ndcg += cg[i] / idcg
            else:
                miss += 1
                auc += hit
        auc += (hit + n_pos) / 2.0 * (n_neg - miss)
        mean_ap += ap / min(K, len(likes))
        mean_auc += auc / (n_pos * n_neg)
        total += 1
    return {
        "precision": relevant / pr_div,
        "map": mean_ap / total,
        "ndcg": ndcg / total,
        "auc": mean_auc / total,
    }


def assert_metrics_equal(ours, expected):
    assert set(ours) == set(METRICS)
    for name in METRICS:
        assert ours[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-6), name


def assert_same_matrix(a, b):
    assert a.shape == b.shape
    assert (a != b).nnz == 0


# --- train_test_split ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 42, 2024])
@pytest.mark.parametrize("train_percentage", [0.5, 0.8, 1.0])
def test_train_test_split_is_implicits_split(ratings, seed, train_percentage):
    train, test = evaluation.train_test_split(ratings, train_percentage, random_state=seed)
    expected_train, expected_test = implicit_evaluation.train_test_split(
        ratings, train_percentage, random_state=seed
    )
    assert_same_matrix(train, expected_train)
    assert_same_matrix(test, expected_test)
    assert train.dtype == expected_train.dtype and test.dtype == expected_test.dtype


def test_train_test_split_partitions_the_interactions(ratings):
    train, test = evaluation.train_test_split(ratings, 0.8, random_state=1)
    assert isinstance(train, sp.csr_matrix) and isinstance(test, sp.csr_matrix)
    assert train.shape == test.shape == ratings.shape
    assert train.has_canonical_format and test.has_canonical_format
    assert_same_matrix(train + test, ratings)
    assert train.multiply(test).nnz == 0
    assert train.nnz + test.nnz == ratings.nnz
    assert abs(train.nnz / ratings.nnz - 0.8) < 0.05


def test_train_test_split_is_seeded(ratings):
    first = evaluation.train_test_split(ratings, 0.7, random_state=3)
    again = evaluation.train_test_split(ratings, 0.7, random_state=3)
    other = evaluation.train_test_split(ratings, 0.7, random_state=4)
    assert_same_matrix(first[1], again[1])
    assert (first[1] != other[1]).nnz > 0
    generator = evaluation.train_test_split(ratings, 0.7, random_state=np.random.default_rng(3))
    assert_same_matrix(first[1], generator[1])
    legacy = [
        evaluation.train_test_split(ratings, 0.7, random_state=np.random.RandomState(5))[1]
        for _ in range(2)
    ]
    assert_same_matrix(*legacy)


def test_train_test_split_keeps_only_positive_test_entries():
    ratings = sp.csr_matrix(np.array([[1.0, -2.0, 0.0, 3.0], [-1.0, 2.0, 5.0, -4.0]]))
    ratings.data[ratings.data == 3.0] = 0.0  # an explicit zero
    for seed in range(5):
        train, test = evaluation.train_test_split(ratings, 0.5, random_state=seed)
        expected_train, expected_test = implicit_evaluation.train_test_split(
            ratings, 0.5, random_state=seed
        )
        assert (test.data > 0).all()
        assert_same_matrix(train, expected_train)
        assert_same_matrix(test, expected_test)


def test_train_test_split_accepts_other_formats_and_int64_indices(ratings):
    expected = evaluation.train_test_split(ratings, 0.8, random_state=9)
    wide = ratings.copy()
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    for matrix in (ratings.tocoo(), sp.csr_array(ratings), wide):
        got = evaluation.train_test_split(matrix, 0.8, random_state=9)
        assert_same_matrix(got[0], expected[0])
        assert_same_matrix(got[1], expected[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train_percentage": 0.0}, ValueError, "train_percentage"),
        ({"train_percentage": 1.5}, ValueError, "train_percentage"),
        ({"train_percentage": -0.1}, ValueError, "train_percentage"),
        ({"train_percentage": "0.8"}, TypeError, "train_percentage"),
        ({"random_state": "seed"}, TypeError, "random_state"),
        ({"random_state": -1}, ValueError, "random_state"),
    ],
)
def test_train_test_split_rejects_bad_arguments(ratings, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluation.train_test_split(ratings, **kwargs)


def test_splits_reject_dense_ratings(ratings):
    with pytest.raises(TypeError, match="ratings"):
        evaluation.train_test_split(ratings.toarray())
    with pytest.raises(TypeError, match="ratings"):
        evaluation.leave_k_out_split(ratings.toarray())


# --- leave_k_out_split --------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 3])
def test_leave_k_out_leaves_k_per_eligible_user(ratings, K):
    train, test = evaluation.leave_k_out_split(ratings, K=K, random_state=0)
    counts = np.diff(ratings.indptr)
    held_out = np.diff(test.indptr)
    np.testing.assert_array_equal(held_out, np.where(counts > K + 1, K, 0))
    assert_same_matrix(train + test, ratings)
    assert train.multiply(test).nnz == 0
    assert train.shape == test.shape == ratings.shape
    assert train.dtype == test.dtype == ratings.dtype


def test_leave_k_out_is_seeded_and_random(ratings):
    first = evaluation.leave_k_out_split(ratings, K=2, random_state=7)[1]
    again = evaluation.leave_k_out_split(ratings, K=2, random_state=7)[1]
    other = evaluation.leave_k_out_split(ratings, K=2, random_state=8)[1]
    assert_same_matrix(first, again)
    assert (first != other).nnz > 0


def test_leave_k_out_holds_out_items_uniformly():
    # one user with 10 items: over many seeds each item is held out about 1/10 of the time
    ratings = sp.csr_matrix(np.ones((1, 10), dtype=np.float32))
    held_out = np.zeros(10)
    for seed in range(400):
        held_out[evaluation.leave_k_out_split(ratings, K=1, random_state=seed)[1].indices] += 1
    assert held_out.min() > 15 and held_out.max() < 65


@pytest.mark.parametrize("train_only_size", [0.0, 0.1, 0.5])
def test_leave_k_out_chooses_implicits_test_users(ratings, train_only_size):
    # implicit draws the held-out items from NumPy's global generator, so only which users
    # are tested (eligibility and the seeded train-only draw) can be compared.
    _, test = evaluation.leave_k_out_split(
        ratings, K=2, train_only_size=train_only_size, random_state=11
    )
    _, expected = implicit_evaluation.leave_k_out_split(
        ratings, K=2, train_only_size=train_only_size, random_state=11
    )
    np.testing.assert_array_equal(np.diff(test.indptr), np.diff(expected.indptr))


def test_leave_k_out_train_only_users_are_not_tested(ratings):
    eligible = np.diff(ratings.indptr) > 2
    _, test = evaluation.leave_k_out_split(ratings, K=1, train_only_size=0.5, random_state=0)
    tested = np.diff(test.indptr) > 0
    assert not (tested & ~eligible).any()
    # half the users are train-only, so about half the eligible users are tested
    assert 0.3 < tested.sum() / eligible.sum() < 0.7


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"K": 0}, ValueError, "K"),
        ({"K": 1.5}, TypeError, "K"),
        ({"train_only_size": 1.0}, ValueError, "train_only_size"),
        ({"train_only_size": -0.5}, ValueError, "train_only_size"),
        ({"train_only_size": None}, TypeError, "train_only_size"),
        ({"random_state": 1.5}, TypeError, "random_state"),
    ],
)
def test_leave_k_out_rejects_bad_arguments(ratings, kwargs, error, match):
    with pytest.raises(error, match=match):
        evaluation.leave_k_out_split(ratings, **kwargs)


# --- ranking metrics ----------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 5, 10, 40])
def test_ranking_metrics_match_implicit(model, split, K):
    train, test = split
    expected = implicit_evaluation.ranking_metrics_at_k(model, train, test, K, False)
    ours = evaluation.ranking_metrics_at_k(model, train, test, K, show_progress=False)
    assert_metrics_equal(ours, expected)


def test_single_metric_functions_match_implicit(model, split):
    train, test = split
    pairs = [
        (evaluation.precision_at_k, implicit_evaluation.precision_at_k),
        (evaluation.mean_average_precision_at_k, implicit_evaluation.mean_average_precision_at_k),
        (evaluation.ndcg_at_k, implicit_evaluation.ndcg_at_k),
        (evaluation.AUC_at_k, implicit_evaluation.AUC_at_k),
    ]
    for ours, theirs in pairs:
        expected = theirs(model, train, test, K=7, show_progress=False)
        got = ours(model, train, test, K=7, show_progress=False)
        assert isinstance(got, float)
        assert got == pytest.approx(expected, rel=1e-6, abs=1e-6), ours.__name__


def test_metrics_on_our_own_split_match_implicit(model, ratings):
    train, test = evaluation.leave_k_out_split(ratings, K=2, random_state=3)
    expected = implicit_evaluation.ranking_metrics_at_k(model, train, test, 10, False)
    assert_metrics_equal(evaluation.ranking_metrics_at_k(model, train, test, 10, False), expected)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batches_give_the_answer_of_one_batch(model, split, batch_size):
    train, test = split
    whole = evaluation.ranking_metrics_at_k(
        model, train, test, K=10, show_progress=False, batch_size=10_000
    )
    batched = evaluation.ranking_metrics_at_k(
        model, train, test, K=10, show_progress=False, batch_size=batch_size
    )
    assert_metrics_equal(batched, whole)


def test_padding_counts_as_a_miss(split):
    # rankings with -1 padding: implicit reads the padding as an item id that is never liked
    train, test = split
    rng = np.random.default_rng(0)
    rankings = np.argsort(rng.random((N_USERS, N_ITEMS)), axis=1).astype(np.int32)[:, :12]
    rankings[::3, 4:] = -1
    rankings[1::7, :] = -1
    model = RankedModel(rankings)
    expected = implicit_evaluation.ranking_metrics_at_k(model, train, test, 12, False)
    assert_metrics_equal(evaluation.ranking_metrics_at_k(model, train, test, 12, False), expected)
    assert_metrics_equal(reference_metrics(model, train, test, 12), expected)


def test_short_rows_count_as_misses(split):
    train, test = split
    rankings = np.tile(np.arange(10, dtype=np.int32), (N_USERS, 1))
    padded = rankings.copy()
    padded[:, 6:] = -1
    short = evaluation.ranking_metrics_at_k(RankedModel(rankings, width=6), train, test, 10, False)
    assert_metrics_equal(
        short, evaluation.ranking_metrics_at_k(RankedModel(padded), train, test, 10, False)
    )
    assert_metrics_equal(short, reference_metrics(RankedModel(rankings, width=6), train, test, 10))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_users=st.integers(1, 12),
    n_items=st.integers(2, 15),
    K=st.integers(1, 8),
)
def test_metrics_match_implicit_on_random_rankings(seed, n_users, n_items, K):
    rng = np.random.default_rng(seed)
    test = sp.random(n_users, n_items, density=0.3, format="csr", random_state=rng)
    test.data[:] = 1.0
    test = test[np.diff(test.indptr) < n_items]  # AUC needs a negative item per user
    if test.nnz == 0:
        return
    train = sp.csr_matrix(test.shape, dtype=np.float32)
    rankings = np.argsort(rng.random((test.shape[0], n_items)), axis=1).astype(np.int32)
    width = min(K, n_items)
    rankings = np.pad(rankings[:, :width], ((0, 0), (0, K - width)), constant_values=-1)
    model = RankedModel(rankings)
    expected = implicit_evaluation.ranking_metrics_at_k(model, train, test, K, False)
    assert_metrics_equal(
        evaluation.ranking_metrics_at_k(model, train, test, K, False, batch_size=3), expected
    )


def test_non_csr_input_warns_and_gives_the_same_answer(model, split):
    train, test = split
    expected = evaluation.ranking_metrics_at_k(model, train, test, 10, False)
    with pytest.warns(ParameterWarning, match="test_user_items"):
        got = evaluation.ranking_metrics_at_k(model, train, test.tocoo(), 10, False)
    assert_metrics_equal(got, expected)
    with pytest.warns(ParameterWarning, match="train_user_items"):
        got = evaluation.ranking_metrics_at_k(model, train.tocsc(), test, 10, False)
    assert_metrics_equal(got, expected)


def test_int64_indices_work(model, split):
    # implicit refuses these ("Buffer dtype mismatch"); ours must not
    train, test = split
    expected = evaluation.ranking_metrics_at_k(model, train, test, 10, False)
    wide = test.copy()
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    assert_metrics_equal(evaluation.ranking_metrics_at_k(model, train, wide, 10, False), expected)


def test_show_progress_draws_a_bar(model, split, capsys):
    train, test = split
    evaluation.ranking_metrics_at_k(model, train, test, 10, show_progress=True)
    assert "100%" in capsys.readouterr().err  # tqdm draws on stderr
    evaluation.ranking_metrics_at_k(model, train, test, 10, show_progress=False)
    assert capsys.readouterr().err == ""


def test_metrics_reject_bad_arguments(model, split):
    train, test = split
    with pytest.raises(ValueError, match="test_user_items"):
        evaluation.ranking_metrics_at_k(model, train, test[:, :-1], 10, False)
    with pytest.raises(ValueError, match="K"):
        evaluation.ranking_metrics_at_k(model, train, test, 0, False)
    with pytest.raises(TypeError, match="K"):
        evaluation.ranking_metrics_at_k(model, train, test, 2.0, False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluation.ranking_metrics_at_k(model, train, test, 10, False, batch_size=0)
    with pytest.raises(TypeError, match="num_threads"):
        evaluation.ranking_metrics_at_k(model, train, test, 10, False, num_threads="4")
    with pytest.raises(TypeError, match="train_user_items"):
        evaluation.ranking_metrics_at_k(model, [[1, 0]], test, 10, False)
    with pytest.raises(TypeError, match="recommend"):
        evaluation.ranking_metrics_at_k(object(), train, test, 10, False)


def test_metrics_reject_a_model_of_another_size(model, ratings):
    wider = sp.hstack([ratings, sp.csr_matrix((N_USERS, 5))]).tocsr()
    train, test = evaluation.train_test_split(wider, random_state=0)
    with pytest.raises(ValueError, match="item factors"):
        evaluation.ranking_metrics_at_k(model, train, test, 10, False)


def test_metrics_explain_what_implicit_divides_by_zero_on(model, split):
    train, test = split
    with pytest.raises(ValueError, match="no interactions"):
        evaluation.ranking_metrics_at_k(model, train, sp.csr_matrix(test.shape), 10, False)
    full = test.tolil()
    full[3, :] = 1.0
    with pytest.raises(ValueError, match="every item for user 3"):
        evaluation.ranking_metrics_at_k(model, train, full.tocsr(), 10, False)
