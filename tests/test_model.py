"""Behaviour of the model on every backend: API contracts, queries, copies and bad input.

Model files are tests/test_persistence.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from als import AlternatingLeastSquares, ModelFitError, ParameterWarning


@pytest.fixture
def fitted(backend_name, small_matrix):
    model = AlternatingLeastSquares(factors=8, iterations=3, random_state=0, backend=backend_name)
    return model.fit(small_matrix, show_progress=False)


def test_fit_returns_self_with_numpy_factors(fitted, small_matrix):
    assert isinstance(fitted.user_factors, np.ndarray)
    assert fitted.user_factors.shape == (small_matrix.shape[0], 8)
    assert fitted.item_factors.shape == (small_matrix.shape[1], 8)
    assert fitted.user_factors.dtype == np.float32


@pytest.mark.parametrize(
    "seed",
    [None, 3, np.random.default_rng(3), np.random.RandomState(3)],
    ids=["none", "int", "generator", "randomstate"],
)
def test_every_kind_of_random_state(backend_name, small_matrix, seed):
    model = AlternatingLeastSquares(
        factors=4, iterations=1, random_state=seed, backend=backend_name
    )
    assert np.isfinite(model.fit(small_matrix, show_progress=False).user_factors).all()


def test_same_seed_same_factors(backend_name, small_matrix):
    fits = [
        AlternatingLeastSquares(factors=4, iterations=2, random_state=9, backend=backend_name)
        .fit(small_matrix, show_progress=False)
        .user_factors
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*fits)


def test_recommend_never_returns_liked_or_filtered_items(fitted, small_matrix):
    users = np.arange(small_matrix.shape[0])
    banned = np.array([0, 5, 9])
    ids, scores = fitted.recommend(users, small_matrix, N=30, filter_items=banned)
    assert ids.shape == scores.shape == (len(users), 30)
    for user in users:
        row = ids[user][ids[user] >= 0]
        assert not set(row) & set(small_matrix[user].indices)
        assert not set(row) & set(banned)
        assert np.all(np.diff(scores[user][ids[user] >= 0]) <= 0)


def test_recommend_scalar_leaves_out_what_it_cannot_return(fitted, small_matrix):
    liked = small_matrix[3].indices
    ids, scores = fitted.recommend(3, small_matrix[3], N=1000)
    assert ids.ndim == 1 and len(ids) == small_matrix.shape[1] - len(liked)
    assert np.isfinite(scores).all() and not set(ids) & set(liked)
    single, _ = fitted.recommend(3, small_matrix[3], N=5)
    batch, _ = fitted.recommend(np.array([3]), small_matrix[[3]], N=5)
    np.testing.assert_array_equal(single, batch[0])


def test_recommend_batch_pads_rows_with_few_candidates(fitted):
    user_items = scipy.sparse.csr_matrix(np.ones((2, fitted.item_factors.shape[0]), np.float32))
    user_items[1, :] = 0
    user_items.eliminate_zeros()
    ids, scores = fitted.recommend(np.array([0, 1]), user_items, N=5)
    assert (ids[0] == -1).all() and np.isneginf(scores[0]).all()
    assert (ids[1] >= 0).all()


def test_recommend_items_subset_and_no_filtering(fitted, small_matrix):
    subset = np.array([40, 3, 17, 120])
    ids, _ = fitted.recommend(
        0, small_matrix[0], N=10, items=subset, filter_already_liked_items=False
    )
    assert sorted(ids) == sorted(subset)
    ids, _ = fitted.recommend(0, None, N=5, filter_already_liked_items=False)
    assert len(ids) == 5
    with pytest.raises(ValueError, match="cannot be combined"):
        fitted.recommend(0, small_matrix[0], items=subset, filter_items=[1])


def test_similar_items_starts_with_the_item_itself(fitted):
    ids, scores = fitted.similar_items(4, N=5)
    assert ids[0] == 4 and scores[0] == pytest.approx(1.0, rel=1e-5)
    ids, scores = fitted.similar_items(np.array([4, 5]), N=5)
    assert ids.shape == (2, 5)


def test_partial_fit_users_grows_the_model(fitted, small_matrix):
    item_users = small_matrix.T.tocsr()
    fitted.partial_fit_items([0], item_users[[3]])
    np.testing.assert_allclose(
        fitted.item_factors[0], fitted.recalculate_item(3, item_users[3]), rtol=1e-6
    )
    n_users = fitted.user_factors.shape[0]
    fitted.partial_fit_users([n_users + 2], small_matrix[[0]])
    assert fitted.user_factors.shape[0] == n_users + 3
    np.testing.assert_allclose(
        fitted.user_factors[n_users + 2], fitted.recalculate_user(0, small_matrix[0]), rtol=1e-6
    )
    assert not fitted.user_factors[n_users].any()


def test_refit_continues_from_current_factors(backend_name, small_matrix):
    once = AlternatingLeastSquares(factors=4, iterations=2, random_state=1, backend=backend_name)
    once.fit(small_matrix, show_progress=False)
    twice = AlternatingLeastSquares(factors=4, iterations=1, random_state=1, backend=backend_name)
    twice.fit(small_matrix, show_progress=False).fit(small_matrix, show_progress=False)
    np.testing.assert_allclose(once.user_factors, twice.user_factors, rtol=1e-5, atol=1e-7)


def test_to_cpu_keeps_the_factors(fitted):
    copy = fitted.to_cpu()
    assert copy.backend_name == "cpu"
    np.testing.assert_array_equal(copy.user_factors, fitted.user_factors)


# the reference backend's NumPy warns on the way to inf; the guard is what must speak
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_fit_guard_names_iteration_and_side(backend_name):
    huge = scipy.sparse.csr_matrix(np.full((3, 3), 3e38, dtype=np.float32))
    model = AlternatingLeastSquares(factors=2, iterations=2, random_state=0, backend=backend_name)
    with pytest.raises(ModelFitError, match="iteration 0"):
        model.fit(huge, show_progress=False)
    assert model.user_factors is None and model.item_factors is None
    with pytest.raises(ValueError, match="call fit"):
        model.recommend(0, huge[0])


# -- bad input ---------------------------------------------------------------------------


def test_non_csr_input_is_converted_with_a_warning(backend_name, small_matrix):
    model = AlternatingLeastSquares(factors=4, iterations=1, random_state=0, backend=backend_name)
    with pytest.warns(ParameterWarning, match="COO"):
        model.fit(small_matrix.tocoo(), show_progress=False)


def test_duplicates_are_summed_with_a_warning(backend_name):
    duplicated = scipy.sparse.csr_matrix(
        (np.ones(3, np.float32), np.array([0, 0, 1]), np.array([0, 3])), shape=(1, 2)
    )
    model = AlternatingLeastSquares(factors=2, iterations=1, random_state=0, backend=backend_name)
    with pytest.warns(ParameterWarning, match="duplicate"):
        model.fit(duplicated, show_progress=False)


@pytest.mark.parametrize(
    "matrix, error, message",
    [
        ([[1, 2]], TypeError, "CSR matrix"),
        (scipy.sparse.csr_matrix(np.array([[1 + 1j]])), TypeError, "real-valued"),
        (scipy.sparse.csr_matrix(np.array([[np.nan, 1.0]])), ValueError, "NaN"),
        (scipy.sparse.csr_matrix(np.array([[np.inf, 1.0]])), ValueError, "NaN or infinite"),
        (
            scipy.sparse.csr_matrix((np.ones(1), np.array([5]), np.array([0, 1])), shape=(1, 2)),
            ValueError,
            "not a valid CSR",
        ),
        (
            scipy.sparse.csr_matrix((np.ones(1), np.array([-1]), np.array([0, 1])), shape=(1, 2)),
            ValueError,
            "not a valid CSR",
        ),
    ],
    ids=["list", "complex", "nan", "inf", "index-too-large", "negative-index"],
)
def test_bad_user_items(backend_name, matrix, error, message):
    model = AlternatingLeastSquares(factors=2, iterations=1, backend=backend_name)
    with pytest.raises(error, match=message):
        model.fit(matrix, show_progress=False)


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"factors": 0}, ValueError, "factors must be >= 1"),
        ({"factors": 2.5}, TypeError, "factors must be an integer"),
        ({"regularization": -1.0}, ValueError, "regularization must be >= 0"),
        ({"regularization": float("nan")}, ValueError, "regularization must be a finite"),
        ({"alpha": 0}, ValueError, "alpha must be > 0"),
        ({"iterations": -1}, ValueError, "iterations must be >= 0"),
        ({"cg_steps": 0}, ValueError, "cg_steps must be >= 1"),
        ({"dtype": "float16"}, TypeError, "not supported by the"),
        ({"dtype": "banana"}, TypeError, "not a NumPy dtype"),
        ({"num_threads": -2}, ValueError, "num_threads must be >= 0"),
        ({"random_state": "seed"}, TypeError, "random_state must be"),
        ({"backend": "tpu"}, ValueError, "unknown backend"),
    ],
)
def test_bad_parameters(small_matrix, params, error, message):
    params = {"backend": "cpu", **params}
    with pytest.raises(error, match=message):
        AlternatingLeastSquares(**params).fit(small_matrix, show_progress=False)


def test_bad_queries(fitted, small_matrix):
    n_users, n_items = small_matrix.shape
    with pytest.raises(ValueError, match="N must be >= 1"):
        fitted.recommend(0, small_matrix[0], N=0)
    with pytest.raises(ValueError, match="out of range"):
        fitted.recommend(n_users, small_matrix[0])
    with pytest.raises(ValueError, match="out of range"):
        fitted.recommend(-1, small_matrix[0])
    with pytest.raises(TypeError, match="integer"):
        fitted.recommend(1.5, small_matrix[0])
    with pytest.raises(ValueError, match="rows, expected 2"):
        fitted.recommend(np.array([0, 1]), small_matrix[[0]])
    # narrower is widened (items added later have no interactions), wider is refused
    wider = scipy.sparse.hstack([small_matrix[0], small_matrix[0]]).tocsr()
    with pytest.raises(ValueError, match="columns but the model has only"):
        fitted.recommend(0, wider)
    with pytest.raises(ValueError, match="filter_items holds id"):
        fitted.recommend(0, small_matrix[0], filter_items=[n_items])
    with pytest.raises(ValueError, match="out of range"):
        fitted.similar_items(n_items)
    with pytest.raises(ValueError, match="out of range"):
        fitted.explain(0, small_matrix, n_items)


def test_fit_shape_must_match_existing_factors(fitted, small_matrix):
    with pytest.raises(ValueError, match="already has user_factors"):
        fitted.fit(small_matrix[:10], show_progress=False)


def test_queries_before_fit():
    with pytest.raises(ValueError, match="call fit"):
        AlternatingLeastSquares(backend="numpy").recommend(0, None)


def test_repr_never_resolves_the_backend(monkeypatch):
    """repr must not import CuPy, compile kernels or raise: it shows the parameter as given."""
    import als.model

    def refuse(*args, **kwargs):
        raise AssertionError("repr resolved the backend")

    monkeypatch.setattr(als.model, "get_backend", refuse)
    model = AlternatingLeastSquares(factors=3, backend="cuda")
    assert repr(model) == (
        "AlternatingLeastSquares(factors=3, regularization=0.01, alpha=1.0, iterations=15, "
        "backend='cuda')"
    )
    assert model._backend is None


def test_repr_names_the_backend_in_use_once_resolved(small_matrix):
    model = AlternatingLeastSquares(factors=3, iterations=1, backend="numpy", random_state=0)
    model.fit(small_matrix, show_progress=False)
    assert repr(model).endswith("backend='numpy')")


# -- similar_* rank cached unit-norm factors ------------------------------------------------


def _cosine_top(factors, queries, N):
    """The reference answer: float64 cosine similarities, best first."""
    factors, queries = factors.astype(np.float64), queries.astype(np.float64)
    norms = np.linalg.norm(factors, axis=1)
    norms[norms == 0] = 1e-10
    query_norms = np.linalg.norm(queries, axis=1)
    query_norms[query_norms == 0] = 1e-10
    scores = queries @ factors.T / norms / query_norms[:, None]
    return -np.sort(-scores, axis=1)[:, :N]


def _assert_similar_match(model, N=6):
    items = np.arange(0, model.item_factors.shape[0], 7)
    _, scores = model.similar_items(items, N=N)
    expected = _cosine_top(model.item_factors, model.item_factors[items], N)
    # cosines of float32 factors, summed in another order than the float64 reference
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    users = np.arange(0, model.user_factors.shape[0], 11)
    _, scores = model.similar_users(users, N=N)
    expected = _cosine_top(model.user_factors, model.user_factors[users], N)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_similar_follows_every_change_of_the_factors(fitted, small_matrix):
    _assert_similar_match(fitted)  # fills the caches
    rng = np.random.default_rng(3)
    fitted.item_factors = rng.standard_normal(fitted.item_factors.shape).astype(np.float32)
    fitted.user_factors = rng.standard_normal(fitted.user_factors.shape).astype(np.float32)
    _assert_similar_match(fitted)
    fitted.partial_fit_items([0, 5], small_matrix.T.tocsr()[[3, 4]])
    fitted.partial_fit_users([1, 2], small_matrix[[5, 6]])
    _assert_similar_match(fitted)
    fitted.fit(small_matrix, show_progress=False)
    _assert_similar_match(fitted)


def test_similar_items_recalculated_is_the_cosine_of_the_new_factors(fitted, small_matrix):
    item_users = small_matrix.T.tocsr()
    _, scores = fitted.similar_items(
        [3, 4], N=5, recalculate_item=True, item_users=item_users[[3, 4]]
    )
    queries = np.stack([fitted.recalculate_item(i, item_users[i]) for i in (3, 4)])
    expected = _cosine_top(fitted.item_factors, queries, 5)
    # float32 factors, recomputed in another order: cosines to 1e-5
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_similar_items_with_more_neighbours_than_items_and_all_filtered(backend_name, dtype):
    rng = np.random.default_rng(4)
    model = AlternatingLeastSquares(factors=5, backend=backend_name, dtype=dtype)
    model.user_factors = rng.standard_normal((6, 5))
    model.item_factors = rng.standard_normal((9, 5))
    ids, scores = model.similar_items(np.arange(9), N=20)
    assert ids.shape == (9, 9) and scores.dtype == dtype
    # float32: rounding of the unit vectors and their products; float64: to its rounding
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    expected = _cosine_top(model.item_factors, model.item_factors, 9)
    np.testing.assert_allclose(scores, expected, rtol=rtol, atol=rtol)
    ids, scores = model.similar_items(np.arange(3), N=4, filter_items=np.arange(9))
    assert (ids == -1).all() and np.isneginf(scores).all()
    ids, scores = model.similar_items(2, N=4, filter_items=np.arange(9))
    assert ids.size == 0 and scores.size == 0
