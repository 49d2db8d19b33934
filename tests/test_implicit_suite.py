"""The behaviours implicit 0.7's own ALS test suite checks, run against ``als`` on every backend.

implicit's ``tests/als_test.py`` and ``tests/recommender_base_test.py`` (benfred/implicit
v0.7.3) are what "drop-in replacement" has to survive. These tests are ours, written to check
the same things (most on implicit's checkerboard: every even user likes every even item,
every odd user every odd item, the diagonal withheld), plus what implicit cannot check about
itself: pickles that hold no backend, ``items=`` against implicit's own answer, narrower
matrices after the model grew. Run implicit's files themselves against ``als`` with a
conftest that sets ``implicit.als.AlternatingLeastSquares = als.AlternatingLeastSquares``:
all but their warning-class test pass (we warn with ``als.ParameterWarning``).
"""

from __future__ import annotations

import copy
import io
import pickle

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS

from als import AlternatingLeastSquares, ParameterWarning
from als.backends.base import BackendUnavailable, get_backend
from als.evaluation import precision_at_k
from als.fitting import training_loss


def checker_board(size):
    """implicit's ``get_checker_board``: parity classes liked, the diagonal withheld."""
    board = np.zeros((size, size))
    for row in range(size):
        board[row, row % 2 :: 2] = 1.0
    return scipy.sparse.csr_matrix(board - np.eye(size))


def make_model(backend_name, **params):
    """implicit's test model: 32 factors, no regularisation, seed 23."""
    settings = dict(factors=32, regularization=0, random_state=23, backend=backend_name)
    return AlternatingLeastSquares(**{**settings, **params})


def fitted_on(backend_name, matrix, **params):
    return make_model(backend_name, **params).fit(matrix, show_progress=False)


@pytest.fixture
def board50(backend_name):
    return fitted_on(backend_name, checker_board(50)), checker_board(50)


@pytest.fixture
def board256(backend_name):
    return fitted_on(backend_name, checker_board(256)), checker_board(256)


# -- recommend ---------------------------------------------------------------------------------


def test_recommend_finds_the_withheld_item(board50):
    model, user_items = board50
    for user in range(50):
        ids, _ = model.recommend(user, user_items[user], N=1)
        assert ids.tolist() == [user]
    # more than there are: every unliked item, none twice (implicit pads with junk instead)
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
        # batch and single scores come from different BLAS calls: float32 rounding
        np.testing.assert_allclose(single_scores, scores[user], rtol=1e-5, atol=1e-6)
    some = np.array([2, 3, 4])
    ids, _ = model.recommend(some, user_items[some], N=1)
    assert ids[:, 0].tolist() == some.tolist()
    ids, _ = model.recommend(some, user_items[some], N=1, filter_items=[0])
    assert 0 not in ids
    ids, scores = model.recommend(users, user_items, N=5, filter_already_liked_items=False)
    for user in users:
        single_ids, single_scores = model.recommend(
            user, user_items[user], N=5, filter_already_liked_items=False
        )
        np.testing.assert_allclose(single_scores, scores[user], rtol=1e-5, atol=1e-6)


def test_recalculate_user_agrees_with_the_stored_factors(board50):
    model, user_items = board50
    users = np.arange(50)
    batch_ids, batch_scores = model.recommend(users, user_items, N=1, recalculate_user=True)
    for user in users:
        ids, scores = model.recommend(user, user_items[user], N=1)
        again_ids, again_scores = model.recommend(
            0, user_items[user], N=1, recalculate_user=True
        )
        assert ids[0] == again_ids[0] == batch_ids[user][0]
        # implicit's tolerance (3 places): CG-fitted factors against an exact solve
        assert again_scores[0] == pytest.approx(scores[0], abs=1e-3)
        assert batch_scores[user][0] == pytest.approx(again_scores[0], abs=1e-3)


def test_precision_at_1_is_perfect(board50):
    model, user_items = board50
    test = scipy.sparse.csr_matrix(np.eye(50))
    assert precision_at_k(model, user_items, test, K=1, show_progress=False) == 1.0


def test_recommended_scores_never_increase(backend_name):
    rng = np.random.RandomState(10)
    items = rng.randint(0, 200, size=1000)
    users = rng.randint(0, 100, size=1000)
    likes = scipy.sparse.coo_matrix((np.ones(1000), (users, items))).tocsr()
    model = fitted_on(backend_name, likes)
    for user in np.unique(users):
        _, scores = model.recommend(user, likes[user])
        assert np.all(np.diff(scores) <= 0)


def test_recommend_refuses_a_matrix_that_is_not_one_row_per_user(board50):
    model, user_items = board50
    # implicit refuses any non-CSR matrix; we refuse the whole matrix for one user
    for other in (user_items.tocsc(), user_items.tocoo()):
        with pytest.raises(ValueError, match="50 rows but userid is one user"):
            model.recommend(0, user_items=other)
    # and convert one user's row from another format, with a warning
    with pytest.warns(ParameterWarning):
        ids, _ = model.recommend(0, user_items=user_items[0].tocsc(), N=1)
    assert ids.tolist() == [0]


# -- ranking a list of items (items=) ------------------------------------------------------


def test_items_are_all_ranked_with_liked_ones_last(board50):
    model, user_items = board50
    selected = np.array([1, 2, 3, 4, 5, 6])
    ids, scores = model.recommend(0, user_items[0], items=selected, N=20)
    assert sorted(ids) == selected.tolist()
    # user 0 likes the even items: ranked last, with score -inf, in id order
    assert ids[3:].tolist() == [2, 4, 6] and np.isneginf(scores[3:]).all()
    assert np.isfinite(scores[:3]).all() and np.all(np.diff(scores[:3]) <= 0)
    # an id given twice comes back once
    ids, _ = model.recommend(0, user_items[0], items=[6, 2, 2, 1], N=20)
    assert sorted(ids) == [1, 2, 6]
    rng = np.random.default_rng(0)
    for user in range(50):
        selected = rng.choice(50, size=10, replace=False).tolist()
        ids, _ = model.recommend(
            user, user_items[user], items=selected, filter_already_liked_items=False
        )
        assert sorted(ids) == sorted(selected)
        for wrong in ([-1, -3, -5], [51, 300, 200]):
            with pytest.raises(IndexError):
                model.recommend(user, user_items[user], items=selected + wrong)
            with pytest.raises(ValueError, match="out of range"):
                model.recommend(user, user_items[user], items=selected + wrong)


def test_items_in_a_batch(board50):
    model, user_items = board50
    selected = np.arange(10) * 3
    ids, scores = model.recommend(np.arange(50), user_items, items=selected)
    assert ids.shape == (50, 10)
    for user in range(50):
        assert sorted(ids[user]) == selected.tolist()
        liked = set(user_items[user].indices) & set(selected)
        assert set(ids[user][10 - len(liked) :]) == liked
        assert np.all(np.diff(scores[user][np.isfinite(scores[user])]) <= 0)


def test_items_with_filter_items_as_implicit(board50):
    model, user_items = board50
    with pytest.raises(ValueError, match="cannot be combined"):
        model.recommend(0, user_items[0], items=[1, 2], filter_items=[3])
    # an empty filter is no filter, as in implicit
    ids, _ = model.recommend(0, user_items[0], items=[1, 2], filter_items=[])
    assert ids.tolist() == [1, 2]


def test_items_agree_with_implicit():
    """Same factors, same question: implicit's ranking, liked items last (its score -FLT_MAX)."""
    user_items = checker_board(20)
    theirs = ImplicitALS(factors=8, regularization=0.1, random_state=1)
    theirs.fit(user_items, show_progress=False)
    ours = AlternatingLeastSquares(factors=8, backend="numpy")
    ours.user_factors, ours.item_factors = theirs.user_factors, theirs.item_factors
    rng = np.random.default_rng(5)
    for user in range(20):
        selected = rng.choice(20, size=7, replace=False)
        for N in (3, 7, 20):
            our_ids, our_scores = ours.recommend(user, user_items[user], items=selected, N=N)
            their_ids, their_scores = theirs.recommend(
                user, user_items[user], items=selected, N=N
            )
            assert len(our_ids) == len(their_ids) == min(N, 7)
            kept = their_scores > -1e38
            assert set(our_ids[np.isfinite(our_scores)]) == set(their_ids[kept])
            # the same float32 products summed by different BLAS kernels
            np.testing.assert_allclose(
                our_scores[np.isfinite(our_scores)], their_scores[kept], rtol=1e-5, atol=1e-6
            )


# -- similar users and items ---------------------------------------------------------------


def test_similar_users_share_the_parity(board50, board256):
    model, _ = board50
    for user in range(50):
        ids, _ = model.similar_users(user, N=10)
        assert all(other % 2 == user % 2 for other in ids)
    model, _ = board256
    users = np.arange(50)
    ids, scores = model.similar_users(users, N=10)
    assert ids.shape == (50, 10)
    for user in users:
        assert ids[user][0] == user
        # cosine of a vector with itself, in float32
        assert scores[user][0] == pytest.approx(1.0, abs=1e-4)
        assert all(other % 2 == user % 2 for other in ids[user])


def test_similar_users_filter_and_users(board256):
    model, _ = board256
    users = np.arange(50)
    ids, _ = model.similar_users(users, N=10, filter_users=np.arange(52) * 5)
    assert not (ids % 5 == 0).any()
    selected = np.arange(10)
    ids, _ = model.similar_users(users, N=10, users=selected)
    for user in users:
        assert set(ids[user]) == set(selected)


def test_similar_items_share_the_parity(board256):
    model, user_items = board256
    item_users = user_items.T.tocsr()
    for item in range(50):
        ids, scores = model.similar_items(item, N=10)
        assert all(other % 2 == item % 2 for other in ids)
        # item_users without recalculate_item is ignored, as in implicit
        same_ids, same_scores = model.similar_items(item, N=10, item_users=item_users[item])
        np.testing.assert_array_equal(same_ids, ids)
        np.testing.assert_array_equal(same_scores, scores)


def test_similar_items_batch_and_recalculated(board256):
    model, user_items = board256
    items = np.arange(50)

    def check(ids):
        assert ids.shape == (50, 10)
        for item in items:
            assert ids[item][0] == item
            assert all(other % 2 == item % 2 for other in ids[item])

    check(model.similar_items(items, N=10)[0])
    item_users = user_items.T.tocsr()[items]
    check(model.similar_items(items, N=10, recalculate_item=True, item_users=item_users)[0])


def test_similar_items_filter_and_items(board256):
    model, _ = board256
    items = np.arange(50)
    ids, _ = model.similar_items(items, N=10, filter_items=np.arange(52) * 5)
    assert not (ids % 5 == 0).any()
    selected = np.arange(10)
    ids, _ = model.similar_items(items, N=10, items=selected)
    for item in items:
        assert set(ids[item]) == set(selected)
    with pytest.raises(IndexError):
        model.similar_items(0, items=[0, 300])


def test_an_item_without_users_is_similar_to_nothing(backend_name):
    board = checker_board(50).toarray()
    board[[42, 49]] = 0
    board[:, [42, 49]] = 0
    model = fitted_on(backend_name, scipy.sparse.csr_matrix(board))
    for item in range(40):
        ids, _ = model.similar_items(item, 10)
        assert 42 not in ids


# -- fitting -------------------------------------------------------------------------------


def test_fit_converts_other_formats_with_a_warning(backend_name):
    user_items = checker_board(50)
    for other in (user_items.tocoo(), user_items.tolil()):
        with pytest.warns(ParameterWarning):
            make_model(backend_name).fit(other, show_progress=False)


def test_fit_accepts_float32_and_float64(backend_name):
    for dtype in (np.float64, np.float32):
        model = fitted_on(backend_name, checker_board(50).astype(dtype))
        assert model.recommend(3, checker_board(50)[3], N=1)[0].tolist() == [3]


def test_fit_callback_and_loss(backend_name):
    calls = []
    model = make_model(backend_name, iterations=3, calculate_training_loss=True)
    model.fit(checker_board(5), show_progress=False, callback=lambda *args: calls.append(args))
    assert [call[0] for call in calls] == [0, 1, 2]
    # the loss reaches 0 here (32 factors for 5 x 5), in implicit too; summed from its parts
    # in float32 it may land a rounding error below 0
    assert all(seconds >= 0 and loss > -1e-6 for _, seconds, loss in calls)
    assert calls[0][2] > calls[-1][2]
    # implicit's older attribute, used when fit gets no callback
    model = make_model(backend_name, iterations=2)
    model.fit_callback = lambda *args: calls.append(args)
    model.fit(checker_board(5), show_progress=False)
    assert [call[0] for call in calls[3:]] == [0, 1] and calls[-1][2] is None


def test_zero_iterations_with_loss(backend_name):
    model = make_model(backend_name, factors=128, iterations=0, calculate_training_loss=True)
    model.fit(scipy.sparse.csr_matrix(np.ones((10, 10))), show_progress=False)
    assert model.user_factors.shape == (10, 128)


def test_cg_stays_finite_on_a_shifted_block_matrix(backend_name):
    # implicit's test_cg_nan: two copies of a 6 x 6 block whose rows are 2, 3/2, 4/3, ...
    # shifted right; last row empty
    block = np.zeros((6, 6))
    for row in range(5):
        block[row, row + 1 :] = [(k + 2) / (k + 1) for k in range(5 - row)]
    raw = scipy.linalg.block_diag(block, block)
    model = fitted_on(
        backend_name, scipy.sparse.csr_matrix(raw), factors=3, regularization=0.01, dtype=np.float64
    )
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()


def test_cg_stays_finite_on_a_nearly_empty_matrix_with_strong_regularization(backend_name):
    # implicit's test_cg_nan2: 5 entries in 100 x 100, lambda 10
    matrix = scipy.sparse.random(
        100, 100, density=0.0005, format="coo", dtype=np.float32, random_state=42
    ).T.tocsr()
    model = fitted_on(backend_name, matrix, regularization=10, iterations=10)
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()


@pytest.mark.parametrize("use_cg", [True, False], ids=["cg", "exact"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_factorize_reconstructs_a_small_matrix(backend_name, use_cg, dtype):
    counts = scipy.sparse.csr_matrix(
        [
            [1, 1, 0, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 0, 1, 1, 0, 1],
            [0, 1, 0, 0, 0, 1],
            [0, 0, 0, 0, 1, 1],
        ],
        dtype=np.float64,
    )
    model = fitted_on(
        backend_name, counts, factors=6, alpha=2.0, dtype=dtype, use_cg=use_cg, random_state=42
    )
    # implicit's tolerance: 6 factors fit a 7 x 6 preference matrix almost exactly
    np.testing.assert_allclose(
        model.user_factors @ model.item_factors.T, counts.toarray(), atol=1e-3
    )


def test_more_factors_than_users_gives_no_nan(backend_name):
    user_items = scipy.sparse.csr_matrix(np.eye(10))
    model = make_model(backend_name, factors=15, regularization=0.01, random_state=None)
    model.fit(user_items, show_progress=False)
    ids, scores = model.recommend(0, user_items[0], 10, filter_already_liked_items=False)
    assert not np.isnan(scores).any() and ids[0] == 0


@pytest.mark.parametrize(
    "regularization, expected", [(0.0, 1.0), (1.0, 2.0)], ids=["plain", "regularised"]
)
def test_loss_of_perfectly_wrong_factors(backend_name, regularization, expected):
    backend = get_backend(backend_name)
    ratings = scipy.sparse.csr_matrix(([1.0], ([0], [0])), shape=(1, 2), dtype=np.float32)
    items = backend.to_device(np.array([[0.0], [1.0]], dtype=np.float32))
    users = backend.to_device(np.array([[1.0]], dtype=np.float32))
    loss = training_loss(backend, backend.to_device(ratings), users, items, regularization)
    assert loss == pytest.approx(expected)


# -- explain -------------------------------------------------------------------------------


def test_explain_adds_up_to_the_score(backend_name):
    counts = scipy.sparse.csr_matrix(
        [
            [1, 1, 0, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [1, 4, 1, 0, 7, 0],
            [1, 1, 0, 0, 0, 0],
            [9, 0, 4, 1, 0, 1],
            [0, 1, 0, 0, 0, 1],
            [0, 0, 2, 0, 1, 1],
        ],
        dtype=np.float32,
    )
    user_items = counts.T.tocsr()
    model = fitted_on(
        backend_name,
        user_items,
        factors=4,
        regularization=20,
        alpha=2.0,
        use_cg=False,
        iterations=100,
    )
    ids, scores = model.recommend(0, user_items[0], N=3)
    again_ids, again_scores = model.recommend(0, user_items[0], N=3, recalculate_user=True)
    np.testing.assert_array_equal(ids, again_ids)
    # exact solves on both sides, float32 factors
    np.testing.assert_allclose(scores, again_scores, atol=1e-4)

    score, contributions, weights = model.explain(0, user_items, itemid=again_ids[0])
    parts = [part for _, part in contributions]
    assert score == pytest.approx(again_scores[0], abs=1e-4)
    assert sum(parts) == pytest.approx(again_scores[0], abs=1e-4)
    assert parts == sorted(parts, reverse=True)
    assert sorted(item for item, _ in contributions) == [0, 2, 3, 4]
    # the returned Cholesky factor is a cache: passing it back gives the same answer
    top_score, top, same_weights = model.explain(
        0, user_items, itemid=again_ids[0], user_weights=weights, N=2
    )
    assert same_weights is weights and top == contributions[:2]
    assert top_score == pytest.approx(score, abs=1e-12)


# -- growing the model ---------------------------------------------------------------------


def test_incremental_retrain_grows_users_and_items(backend_name):
    likes = checker_board(50)
    model = fitted_on(backend_name, likes, factors=2)
    assert model.recommend(0, likes[0])[0][0] == 0
    model.partial_fit_users([0], likes[1])
    assert model.recommend(0, likes[1])[0][0] == 1
    model.partial_fit_users([100], likes[1])
    assert model.recommend(100, likes[1])[0][0] == 1
    # likes[1] has 50 columns, the model now 101 users: the rest have no interactions
    model.partial_fit_items([100], likes[1])
    assert set(model.recommend(1, likes[1], N=2)[0]) == {1, 100}
    model.partial_fit_users([101], likes[1])
    model.partial_fit_items([101], likes[1])
    assert set(model.recommend(101, likes[1], N=3)[0]) == {1, 100, 101}
    assert model.user_factors.shape == (102, 2) and model.item_factors.shape == (102, 2)


def test_narrower_matrices_are_widened_wider_ones_refused(board50):
    model, likes = board50
    narrow = likes[1][:, :30]
    wide = scipy.sparse.hstack([likes[1], likes[1]]).tocsr()
    padded = scipy.sparse.hstack([narrow, scipy.sparse.csr_matrix((1, 20))]).tocsr()
    np.testing.assert_array_equal(
        model.recalculate_user(0, narrow), model.recalculate_user(0, padded)
    )
    np.testing.assert_array_equal(
        model.recalculate_item(0, narrow), model.recalculate_item(0, padded)
    )
    for call in (
        lambda: model.recalculate_user(0, wide),
        lambda: model.recalculate_item(0, wide),
        lambda: model.partial_fit_users([0], wide),
        lambda: model.partial_fit_items([0], wide),
        lambda: model.recommend(0, wide),
        lambda: model.explain(0, wide, 1),
    ):
        with pytest.raises(ValueError, match="100 columns but the model has only 50"):
            call()


# -- pickling, copying, saving ----------------------------------------------------------------


class _PlainUnpickler(pickle.Unpickler):
    """Records every global a pickle refers to."""

    def __init__(self, data):
        super().__init__(io.BytesIO(data))
        self.globals = set()

    def find_class(self, module, name):
        self.globals.add(module)
        return super().find_class(module, name)


def test_pickle_round_trip_recommends_exactly_as_the_original(backend_name, small_matrix):
    model = fitted_on(backend_name, small_matrix, factors=16, iterations=2)
    data = pickle.dumps(model)
    unpickler = _PlainUnpickler(data)
    reloaded = unpickler.load()
    # plain arrays and the model class: no backend, no CuPy, no module objects
    assert {module.split(".")[0] for module in unpickler.globals} <= {"als", "numpy"}
    factor_bytes = model.user_factors.nbytes + model.item_factors.nbytes
    assert len(data) < 1.1 * factor_bytes
    assert reloaded.backend_name == backend_name
    users = np.arange(small_matrix.shape[0])
    for left, right in zip(
        model.recommend(users, small_matrix, N=10),
        reloaded.recommend(users, small_matrix, N=10),
        strict=True,
    ):
        np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(model.similar_items(0)[0], reloaded.similar_items(0)[0])
    np.testing.assert_array_equal(model.similar_items(0)[1], reloaded.similar_items(0)[1])


def test_pickle_then_recalculate_user(backend_name):
    user_items = checker_board(10)
    model = fitted_on(backend_name, user_items, factors=2, regularization=0.1)
    original, _ = model.recommend(0, user_items[0], recalculate_user=True)
    reloaded = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(
        reloaded.recommend(0, user_items[0], recalculate_user=True)[0], original
    )


def test_pickle_unfitted_and_deepcopy(backend_name, small_matrix):
    unfitted = pickle.loads(pickle.dumps(make_model(backend_name, factors=4, iterations=1)))
    assert unfitted.user_factors is None and unfitted.factors == 4
    unfitted.fit(small_matrix, show_progress=False)
    model = fitted_on(backend_name, small_matrix, factors=4, iterations=1)
    np.testing.assert_array_equal(unfitted.user_factors, model.user_factors)
    twin = copy.deepcopy(model)
    np.testing.assert_array_equal(
        twin.recommend(3, small_matrix[3])[0], model.recommend(3, small_matrix[3])[0]
    )
    before = model.user_factors.copy()
    twin.partial_fit_users([0], small_matrix[[5]])
    np.testing.assert_array_equal(model.user_factors, before)


def test_a_gpu_model_unpickled_without_a_gpu(small_matrix):
    try:
        get_backend("cuda")
        pytest.skip("a GPU is usable here: this checks a machine without one")
    except BackendUnavailable:
        pass
    model = fitted_on("numpy", small_matrix, factors=4, iterations=1)
    model.backend = "cuda"  # pickles as a model made with backend="cuda" would
    gpu_model = pickle.loads(pickle.dumps(model))
    # unpickling needs no GPU; the first query does, and says what is missing
    with pytest.raises(BackendUnavailable, match="to_cpu"):
        gpu_model.recommend(0, small_matrix[0])
    cpu_model = gpu_model.to_cpu()
    assert cpu_model.backend_name == "cpu"
    np.testing.assert_array_equal(cpu_model.user_factors, model.user_factors)
    ids, _ = cpu_model.recommend(0, small_matrix[0])
    assert set(ids) == set(model.recommend(0, small_matrix[0])[0])


def test_save_and_load_with_paths_and_files(board50, tmp_path):
    model, _ = board50
    model.save(tmp_path / "model.npz")
    for reloaded in (
        model.load(tmp_path / "model.npz"),
        AlternatingLeastSquares.load(open(tmp_path / "model.npz", "rb")),
    ):
        for left, right in zip(model.similar_items(1), reloaded.similar_items(1), strict=True):
            np.testing.assert_array_equal(left, right)
        assert reloaded.backend_name == model.backend_name


def test_save_and_load_an_unfitted_model(backend_name, tmp_path):
    model = make_model(backend_name, use_gpu=backend_name == "cuda")
    model.save(tmp_path / "model.npz")
    reloaded = model.load(tmp_path / "model.npz")
    assert reloaded.__dict__ == model.__dict__
    assert reloaded.user_factors is None


def test_a_gpu_model_file_loaded_without_a_gpu(small_matrix, tmp_path):
    try:
        get_backend("cuda")
        pytest.skip("a GPU is usable here: this checks a machine without one")
    except BackendUnavailable:
        pass
    model = fitted_on("numpy", small_matrix, factors=4, iterations=1)
    model.backend = "cuda"  # as saved by a model trained with backend="cuda"
    model.save(tmp_path / "model.npz")
    with pytest.raises(BackendUnavailable, match="backend='cpu'"):
        AlternatingLeastSquares.load(tmp_path / "model.npz")
    loaded = AlternatingLeastSquares.load(tmp_path / "model.npz", backend="cpu")
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)


def test_deprecated_rank_items_and_recommend_all(board50):
    model, user_items = board50
    with pytest.warns(DeprecationWarning):
        ids, _ = model.rank_items(0, user_items[0], [1, 2, 3])
    assert sorted(ids) == [1, 2, 3]
    with pytest.warns(DeprecationWarning):
        ids = model.recommend_all(user_items, N=1)
    assert ids[:, 0].tolist() == list(range(50))


def test_gram_matrices_as_implicit(board50):
    model, _ = board50
    Y, X = model.item_factors.astype(np.float64), model.user_factors.astype(np.float64)
    # float32 products against float64 ones
    np.testing.assert_allclose(model.YtY, Y.T @ Y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.XtX, X.T @ X, rtol=1e-4, atol=1e-4)
