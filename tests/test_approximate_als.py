"""``als.approximate_als``: implicit's approximate models, checked as implicit's suite checks them.

implicit's ``tests/approximate_als_test.py`` runs its ``RecommenderBaseTestMixin`` against
``FaissAlternatingLeastSquares``, ``NMSLibAlternatingLeastSquares`` and
``AnnoyAlternatingLeastSquares``. These tests check the same behaviours against ours on
implicit's checkerboard (every even user likes every even item, every odd user every odd
item, the diagonal withheld), with implicit's test settings, and what implicit's wrappers do
not offer: ``recalculate_user``, ``similar_users``, ``items=``, pickles, ``save`` / ``load``
and ``to_cpu``. Run implicit's file itself against ours with a conftest that sets
``implicit.approximate_als.<Name> = als.approximate_als.<Name>``: all but its warning-class
test pass (we warn with ``als.ParameterWarning``).
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import scipy.sparse

from als import AlternatingLeastSquares, ModelFileError
from als.ann import AnnoyModel, FaissModel, NMSLibModel
from als.approximate_als import (
    AnnoyAlternatingLeastSquares,
    FaissAlternatingLeastSquares,
    NMSLibAlternatingLeastSquares,
)
from als.evaluation import precision_at_k
from tests.test_implicit_suite import checker_board

#: implicit's test models: the library, its class and its settings
MODELS = {
    "faiss": (FaissAlternatingLeastSquares, dict(nlist=1, nprobe=1, use_gpu=False)),
    "nmslib": (NMSLibAlternatingLeastSquares, dict(index_params={"post": 2})),
    "annoy": (AnnoyAlternatingLeastSquares, dict()),
}


@pytest.fixture(params=sorted(MODELS))
def library(request):
    pytest.importorskip(request.param)
    return request.param


def make_model(library, **params):
    """implicit's test model: 32 factors, no regularisation, seed 23, on the CPU."""
    cls, settings = MODELS[library]
    defaults = dict(factors=32, regularization=0, random_state=23, backend="cpu")
    return cls(**{**defaults, **settings, **params})


def fitted_on(library, matrix, **params):
    return make_model(library, **params).fit(matrix, show_progress=False)


@pytest.fixture
def board50(library):
    return fitted_on(library, checker_board(50)), checker_board(50)


@pytest.fixture
def board256(library):
    return fitted_on(library, checker_board(256)), checker_board(256)


# -- recommend ---------------------------------------------------------------------------------


def test_recommend_finds_the_withheld_item(board50):
    model, user_items = board50
    for user in range(50):
        ids, _ = model.recommend(user, user_items[user], N=1)
        assert ids.tolist() == [user]
    # more than there are: every unliked item once, as the exact model answers
    ids, _ = model.recommend(0, user_items[0], N=10_000)
    assert len(ids) == 50 - user_items[0].nnz == len(set(ids))
    ids, _ = model.recommend(0, user_items[0], N=1, filter_items=[0])
    assert 0 not in ids


def test_recommend_batch_matches_single_users(board50):
    model, user_items = board50
    users = np.arange(50)
    ids, scores = model.recommend(users, user_items[users], N=1)
    assert ids.shape == (50, 1)
    for user in users:
        assert ids[user][0] == user
        single_ids, single_scores = model.recommend(user, user_items[user], N=1)
        np.testing.assert_array_equal(single_ids, ids[user])
        # scored and ranked by the same kernel: equal, not merely close
        np.testing.assert_array_equal(single_scores, scores[user])
    ids, _ = model.recommend(users[2:5], user_items[2:5], N=1, filter_items=[0])
    assert ids[:, 0].tolist() == [2, 3, 4]
    ids, scores = model.recommend(users, user_items, N=5, filter_already_liked_items=False)
    for user in users:
        single_ids, single_scores = model.recommend(
            user, user_items[user], N=5, filter_already_liked_items=False
        )
        np.testing.assert_array_equal(single_ids, ids[user])
        np.testing.assert_array_equal(single_scores, scores[user])


def test_recalculate_user_agrees_with_the_stored_factors(board50):
    model, user_items = board50
    users = np.arange(50)
    batch_ids, batch_scores = model.recommend(users, user_items, N=1, recalculate_user=True)
    for user in users:
        ids, scores = model.recommend(user, user_items[user], N=1)
        again_ids, again_scores = model.recommend(0, user_items[user], N=1, recalculate_user=True)
        assert ids[0] == again_ids[0] == batch_ids[user][0]
        # implicit's tolerance (3 places): CG-fitted factors against an exact solve
        assert again_scores[0] == pytest.approx(scores[0], abs=1e-3)
        assert batch_scores[user][0] == pytest.approx(again_scores[0], abs=1e-3)


def test_precision_at_1_is_perfect(board50):
    model, user_items = board50
    test = scipy.sparse.csr_matrix(np.eye(50))
    assert precision_at_k(model, user_items, test, K=1, show_progress=False) == 1.0


def test_recommended_scores_never_increase(library):
    rng = np.random.RandomState(10)
    items = rng.randint(0, 200, size=1000)
    users = rng.randint(0, 100, size=1000)
    likes = scipy.sparse.coo_matrix((np.ones(1000), (users, items))).tocsr()
    model = fitted_on(library, likes)
    for user in np.unique(users):
        _, scores = model.recommend(user, likes[user])
        assert len(scores) == 10 and np.all(np.diff(scores) <= 0)


def test_recommend_refuses_a_matrix_that_is_not_one_row_per_user(board50):
    model, user_items = board50
    for other in (user_items.tocsc(), user_items.tocoo()):
        with pytest.raises(ValueError, match="50 rows but userid is one user"):
            model.recommend(0, user_items=other)


def test_items_are_ranked_exactly(board50):
    """implicit's wrappers refuse ``items=``; ranking a list needs no index: the model's answer."""
    model, user_items = board50
    selected = np.array([1, 2, 3, 4, 5, 6])
    ids, scores = model.recommend(0, user_items[0], items=selected, N=20)
    exact_ids, exact_scores = model.model.recommend(0, user_items[0], items=selected, N=20)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_array_equal(scores, exact_scores)
    assert set(ids[3:]) == {2, 4, 6}
    ids, _ = model.recommend(np.arange(50), user_items, items=np.arange(10) * 3)
    assert all(set(row) == set(range(0, 30, 3)) for row in ids)
    with pytest.raises(IndexError):
        model.recommend(0, user_items[0], items=[1, 2, 300])


# -- similar items and users -------------------------------------------------------------------


def test_similar_items_share_the_parity(board256):
    model, user_items = board256
    item_users = user_items.T.tocsr()
    for item in range(50):
        ids, scores = model.similar_items(item, N=10)
        assert len(ids) == 10 and all(other % 2 == item % 2 for other in ids)
        # item_users without recalculate_item is ignored, as in implicit
        same_ids, same_scores = model.similar_items(item, N=10, item_users=item_users[item])
        np.testing.assert_array_equal(same_ids, ids)
        np.testing.assert_array_equal(same_scores, scores)


def test_similar_items_batch_and_recalculated(board256):
    model, user_items = board256
    items = np.arange(50)

    def check(ids, scores):
        assert ids.shape == (50, 10)
        for item in items:
            assert ids[item][0] == item
            assert all(other % 2 == item % 2 for other in ids[item])
        # a cosine of a vector with itself, in float32
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)

    check(*model.similar_items(items, N=10))
    item_users = user_items.T.tocsr()[items]
    check(*model.similar_items(items, N=10, recalculate_item=True, item_users=item_users))


def test_similar_items_filter_and_items(board256):
    model, _ = board256
    items = np.arange(50)
    ids, _ = model.similar_items(items, N=10, filter_items=np.arange(52) * 5)
    assert ids.shape == (50, 10) and not (ids % 5 == 0).any() and (ids >= 0).all()
    ids, _ = model.similar_items(items, N=10, items=np.arange(10))
    assert all(set(row) == set(range(10)) for row in ids)


def test_similar_users_are_the_models(board256):
    """implicit's wrappers raise NotImplementedError; ours ask the model."""
    model, _ = board256
    ids, scores = model.similar_users(np.arange(50), N=10)
    exact_ids, exact_scores = model.model.similar_users(np.arange(50), N=10)
    np.testing.assert_array_equal(ids, exact_ids)
    np.testing.assert_array_equal(scores, exact_scores)
    assert all(other % 2 == user % 2 for user in range(50) for other in ids[user])


def test_an_item_without_users_is_similar_to_nothing(library):
    board = checker_board(50).toarray()
    board[[42, 49]] = 0
    board[:, [42, 49]] = 0
    model = fitted_on(library, scipy.sparse.csr_matrix(board))
    for item in range(40):
        ids, _ = model.similar_items(item, 10)
        assert 42 not in ids and len(ids) == 10


def test_fit_accepts_float32_and_float64(library):
    for dtype in (np.float64, np.float32):
        model = fitted_on(library, checker_board(50).astype(dtype))
        assert model.recommend(3, checker_board(50)[3], N=1)[0].tolist() == [3]


def test_fit_callback_and_parameters_pass_through(library):
    calls = []
    model = make_model(library, iterations=3)
    model.fit(checker_board(5), show_progress=False, callback=lambda *args: calls.append(args))
    assert [call[0] for call in calls] == [0, 1, 2]
    # every model parameter reaches the model; positional ones as in implicit
    assert (model.factors, model.iterations, model.regularization) == (32, 3, 0)
    cls, settings = MODELS[library]
    assert cls(16, 0.5, **settings).model.factors == 16
    assert cls(16, 0.5, **settings).regularization == 0.5


# -- classes, copies, files ---------------------------------------------------------------------


WRAPPERS = {"faiss": FaissModel, "nmslib": NMSLibModel, "annoy": AnnoyModel}

#: an index setting other than the test model's, per library
OTHER_SETTING = {
    "faiss": {"nlist": 7},
    "nmslib": {"query_params": {"ef": 7}},
    "annoy": {"n_trees": 7},
}


def same_answers(left, right, user_items):
    for query in (
        lambda model: model.recommend(np.arange(10), user_items[:10], N=5),
        lambda model: model.similar_items(np.arange(10), N=5),
    ):
        for a, b in zip(query(left), query(right), strict=True):
            np.testing.assert_array_equal(a, b)


def test_classes_are_real(library):
    model = make_model(library)
    assert isinstance(model, MODELS[library][0]) and isinstance(model, WRAPPERS[library])
    assert isinstance(model.model, AlternatingLeastSquares)


def test_pickle_and_deepcopy_keep_settings_and_answers(board50):
    model, user_items = board50
    model.recommend(0, user_items[0])  # builds an index: never pickled
    for copied in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert type(copied) is type(model) and copied.settings() == model.settings()
        assert not copied._cache
        same_answers(model, copied, user_items)
    library = type(model).LIBRARY
    unfitted = pickle.loads(pickle.dumps(make_model(library, **OTHER_SETTING[library])))
    assert unfitted.settings() == make_model(library, **OTHER_SETTING[library]).settings()
    assert unfitted.settings() != make_model(library).settings()


def test_save_and_load(board50, tmp_path):
    model, user_items = board50
    model.save(tmp_path / "model.npz", extra={"names": np.array(["a", "b"])})
    reloaded, extra = type(model).load(tmp_path / "model.npz", return_extra=True)
    assert type(reloaded) is type(model) and reloaded.settings() == model.settings()
    assert extra["names"].tolist() == ["a", "b"] and set(extra) == {"names"}
    same_answers(model, reloaded, user_items)
    # an ordinary model file: the plain model reads it
    plain = AlternatingLeastSquares.load(tmp_path / "model.npz")
    np.testing.assert_array_equal(plain.item_factors, model.item_factors)
    with open(tmp_path / "model.npz", "rb") as file:
        same_answers(model, type(model).load(file), user_items)


def test_load_refuses_another_librarys_file(board50, tmp_path):
    model, _ = board50
    model.save(tmp_path / "model.npz")
    for other in set(WRAPPERS.values()) - {WRAPPERS[type(model).LIBRARY]}:
        with pytest.raises(ModelFileError, match=f"use the {type(model).LIBRARY} class"):
            other.load(tmp_path / "model.npz")


def test_save_and_load_unfitted(library, tmp_path):
    model = make_model(library, **OTHER_SETTING[library])
    model.save(tmp_path / "model.npz")
    reloaded = type(model).load(tmp_path / "model.npz")
    assert reloaded.settings() == model.settings() and reloaded.item_factors is None
    assert reloaded.model.__dict__ == model.model.__dict__


def test_to_cpu_keeps_the_settings(board50):
    model, user_items = board50
    moved = model.to_cpu()
    assert type(moved) is type(model) and moved.settings() == model.settings()
    assert moved.backend_name == "cpu"
    same_answers(model, moved, user_items)


def test_growing_the_model_rebuilds_the_index(library):
    likes = checker_board(50)
    model = fitted_on(library, likes, factors=2)
    assert model.recommend(0, likes[0])[0][0] == 0
    model.partial_fit_users([100], likes[1])
    assert model.recommend(100, likes[1])[0][0] == 1
    model.partial_fit_items([100], likes[1])
    assert set(model.recommend(1, likes[1], N=2)[0]) == {1, 100}
    assert 100 in model.similar_items(np.arange(101), N=101)[0]
    # refitting drops the indexes; the next query builds them from the new factors
    assert model._cache
    model.fit(checker_board(101), show_progress=False)
    assert not model._cache
    assert model.recommend(3, checker_board(101)[3], N=1)[0].tolist() == [3]


def test_setting_factors_rebuilds_the_index(board50):
    model, user_items = board50
    model.recommend(0, user_items[0])
    rng = np.random.default_rng(0)
    # spread items (HNSW links points that all sit in one spot poorly: one far away may be
    # missed whichever threads built the graph), and one far the best match for user 0
    items = rng.normal(size=model.item_factors.shape).astype(np.float32)
    user = model.user_factors[0]
    items[7] = user / np.abs(user).max() * 10 * np.abs(items).max()
    model.item_factors = items
    assert model.recommend(0, user_items[0], N=1, filter_already_liked_items=False)[0][0] == 7


def test_docstring_example_runs():
    pytest.importorskip("faiss")
    import doctest

    import als.approximate_als

    failures, tried = doctest.testmod(als.approximate_als, optionflags=doctest.ELLIPSIS)
    assert tried and failures == 0
