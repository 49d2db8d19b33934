"""Robustness: bad input gets a clear error, no answer is NaN, queries are safe from many
threads, properties hold on random input.

Every bad-input case names the exception type and a phrase of its message; none may crash
the interpreter, hang, or leave NaN factors behind silently. Model files are
tests/test_persistence.py's.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from als import AlternatingLeastSquares, ModelFitError
from als.backends.base import get_backend
from tests.conftest import power_law_matrix


@pytest.fixture(scope="module")
def fitted():
    matrix = power_law_matrix(60, 40, 600, seed=3)
    model = AlternatingLeastSquares(factors=6, iterations=2, random_state=0, backend="cpu")
    return model.fit(matrix, show_progress=False), matrix


@pytest.fixture(scope="module")
def user_items():
    return power_law_matrix(120, 80, 1500, seed=5)


def fit(user_items, backend="cpu", **params):
    options = {"factors": 4, "iterations": 2, "random_state": 0, "backend": backend, **params}
    return AlternatingLeastSquares(**options).fit(user_items, show_progress=False)


def row_of(weights, items, n_items):
    return scipy.sparse.csr_matrix(
        (np.asarray(weights, np.float32), ([0] * len(items), items)), shape=(1, n_items)
    )


def csr(data, indices, indptr, shape):
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=shape)


# -- fitting on bad input ------------------------------------------------------------------

BAD_FITS = {
    "empty-shape": (scipy.sparse.csr_matrix((0, 5), dtype=np.float32), ValueError, "empty"),
    "no-items": (scipy.sparse.csr_matrix((5, 0), dtype=np.float32), ValueError, "empty"),
    "no-entries": (
        scipy.sparse.csr_matrix((5, 5), dtype=np.float32),
        ValueError,
        "no interactions",
    ),
    "string-weights": (np.array([["a", "b"]]), TypeError, "real-valued"),
    "object-array": (np.array([[1, None]], dtype=object), TypeError, "real-valued"),
    "one-dimensional": (np.ones(3), TypeError, "CSR matrix"),
    "none": (None, TypeError, "CSR matrix"),
    "nan-weight": (csr(np.array([1.0, np.nan]), [0, 1], [0, 2], (1, 2)), ValueError, "NaN"),
    "inf-weight": (csr(np.array([np.inf]), [0], [0, 1], (1, 2)), ValueError, "infinite"),
    "float32-overflow": (csr(np.array([1e300]), [0], [0, 1], (1, 2)), ValueError, "overflow"),
    "index-out-of-range": (csr(np.ones(1), [7], [0, 1], (1, 2)), ValueError, "not a valid CSR"),
    "negative-index": (csr(np.ones(1), [-1], [0, 1], (1, 2)), ValueError, "not a valid CSR"),
    "bad-indptr": (
        scipy.sparse.csr_matrix(
            (np.ones(2), np.array([0, 1]), np.array([0, 2, 1])), shape=(2, 2), copy=False
        ),
        ValueError,
        "not a valid CSR",
    ),
}


@pytest.mark.parametrize("case", BAD_FITS, ids=list(BAD_FITS))
def test_fit_refuses_bad_input(backend_name, case):
    matrix, error, message = BAD_FITS[case]
    model = AlternatingLeastSquares(factors=2, iterations=1, backend=backend_name)
    with pytest.raises(error, match=message):
        model.fit(matrix, show_progress=False)
    assert model.user_factors is None


def test_negative_weights_are_dislikes_not_errors(backend_name):
    matrix = power_law_matrix(30, 20, 200, seed=1, negative_fraction=0.3)
    model = AlternatingLeastSquares(factors=3, iterations=2, random_state=0, backend=backend_name)
    assert np.isfinite(model.fit(matrix, show_progress=False).user_factors).all()


def test_users_and_items_without_interactions_get_zero_factors(backend_name):
    matrix = scipy.sparse.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [2, 3, 0]], np.float32))
    model = AlternatingLeastSquares(factors=2, iterations=2, random_state=0, backend=backend_name)
    model.fit(matrix, show_progress=False)
    assert not model.user_factors[1].any() and not model.item_factors[2].any()


def test_int64_indices_and_unsorted_duplicates_give_the_canonical_answer(backend_name):
    canonical = power_law_matrix(50, 30, 400, seed=5)
    coo = canonical.tocoo()
    order = np.random.default_rng(0).permutation(coo.nnz)
    # the same matrix as unsorted int64 CSR, with every weight split into two duplicates
    rows = np.concatenate([coo.row[order], coo.row[order]])
    cols = np.concatenate([coo.col[order], coo.col[order]]).astype(np.int64)
    data = np.concatenate([coo.data[order] / 2, coo.data[order] / 2])
    counts = np.bincount(rows, minlength=50)
    by_row = np.argsort(rows, kind="stable")
    messy = csr(data[by_row], cols[by_row], np.concatenate([[0], np.cumsum(counts)]), (50, 30))
    messy.indices = messy.indices.astype(np.int64)
    messy.indptr = messy.indptr.astype(np.int64)
    fits = []
    for matrix in (canonical, messy):
        model = AlternatingLeastSquares(
            factors=4, iterations=2, random_state=0, backend=backend_name
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(model.fit(matrix, show_progress=False).user_factors)
    np.testing.assert_allclose(fits[0], fits[1], rtol=1e-5, atol=1e-7)


def test_zero_iterations_keeps_the_initial_factors(backend_name):
    matrix = power_law_matrix(10, 8, 40, seed=2)
    model = AlternatingLeastSquares(factors=3, iterations=0, random_state=4, backend=backend_name)
    model.fit(matrix, show_progress=False)
    expected = np.random.default_rng(4).random((10, 3), dtype=np.float32) * np.float32(0.01)
    np.testing.assert_array_equal(model.user_factors, expected)


# -- queries and factors ---------------------------------------------------------------------


def test_n_larger_than_the_catalogue(fitted):
    model, matrix = fitted
    ids, _ = model.recommend(0, matrix[0], N=10_000)
    assert len(ids) == matrix.shape[1] - matrix[0].nnz and len(set(ids)) == len(ids)
    ids, _ = model.similar_items(0, N=10_000)
    assert len(ids) == matrix.shape[1]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, x: m.recommend(0, x[0], N=0), ValueError, "N must be >= 1"),
        (lambda m, x: m.recommend(0, x[0], N=2.5), TypeError, "N must be an integer"),
        (lambda m, x: m.recommend(np.array([[0]]), x[0]), ValueError, "1-D array"),
        (lambda m, x: m.recommend(np.array([0.5]), x[0]), TypeError, "integer ids"),
        (lambda m, x: m.recommend(0, x[0], items=[-3]), ValueError, "out of range"),
        (lambda m, x: m.recommend(0, x), ValueError, r"pass that user's row, recommend\(userid"),
        (lambda m, x: m.similar_users(10_000), ValueError, "out of range"),
        (lambda m, x: m.similar_items(0, filter_items=[999]), ValueError, "filter_items"),
        (lambda m, x: m.recalculate_user(0, x[:2]), ValueError, "rows, expected 1"),
        (lambda m, x: m.partial_fit_users([0, 1], x[[0]]), ValueError, "rows, expected 2"),
        (lambda m, x: m.explain(0, x, 0, N=0), ValueError, "N must be >= 1"),
        (lambda m, x: m.explain(0, x.T.tocsr(), 0), ValueError, "items x users: explain takes"),
    ],
    ids=[
        "N=0",
        "N-float",
        "2d-ids",
        "float-ids",
        "negative-item",
        "rows-mismatch",
        "unknown-user",
        "unknown-filter",
        "recalculate-rows",
        "partial-fit-rows",
        "explain-N",
        "explain-transposed",
    ],
)
def test_bad_queries(fitted, call, error, message):
    model, matrix = fitted
    with pytest.raises(error, match=message):
        call(model, matrix)


@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_topk_in_many_small_blocks_equals_one_block(name, monkeypatch):
    """Scores are computed in blocks of queries so queries x items never has to fit at once."""
    from als.backends import numba_cpu, xp_generic

    backend = get_backend(name)
    rng = np.random.default_rng(0)
    queries, factors = rng.standard_normal((97, 5)), rng.standard_normal((300, 5))
    exclude = scipy.sparse.random(97, 300, density=0.1, format="csr", random_state=1)
    whole = backend.topk(queries, factors, 7, exclude, np.array([3, 4]))
    monkeypatch.setattr(xp_generic, "BLOCK_ELEMENTS", 1000)  # 3 queries per block
    # the Numba top-k: tiles of 3 queries x 16 items (float64 scores of 3 x 16 in 384 bytes)
    monkeypatch.setattr(numba_cpu, "TOPK_QUERY_TILE", 3)
    monkeypatch.setattr(numba_cpu, "cache_bytes", lambda: 768)
    assert numba_cpu.topk_tiles(97, 5, 8, threads=2) == (3, 16)
    blocked = backend.topk(queries, factors, 7, exclude, np.array([3, 4]))
    np.testing.assert_array_equal(blocked[0], whole[0])
    # BLAS may order a product's sums differently for other block shapes: 1 ulp
    np.testing.assert_allclose(blocked[1], whole[1], rtol=1e-12)


def test_factor_arrays_from_outside_are_copied_and_checked(fitted):
    model, matrix = fitted
    copy = AlternatingLeastSquares(factors=6, backend="cpu")
    frozen = np.array(model.user_factors)
    frozen.setflags(write=False)
    strided = np.asfortranarray(model.item_factors)
    copy.user_factors, copy.item_factors = frozen, strided
    copy.partial_fit_users([0], matrix[[0]])  # writes in place: must not touch `frozen`
    assert copy.user_factors.flags.writeable and copy.item_factors.flags.c_contiguous
    np.testing.assert_array_equal(frozen, model.user_factors)
    with pytest.raises(TypeError, match="floating-point"):
        copy.user_factors = np.ones((3, 6), dtype=np.int64)
    with pytest.raises(ValueError, match="NaN or infinite"):
        copy.item_factors = np.full((3, 6), np.nan)
    with pytest.raises(ValueError, match="2-D"):
        copy.item_factors = np.ones(6)


# -- no query or refit answers with NaN ------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_refits_and_queries_refuse_non_finite_results(user_items, backend):
    model = fit(user_items, backend, alpha=10.0)
    n_items = user_items.shape[1]
    # alpha * weight overflows float32: the confidences are infinite
    huge = row_of([3e38, 3e38], [1, 2], n_items)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recalculate_user(0, huge)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recommend(0, huge, recalculate_user=True)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recalculate_item(0, row_of([3e38], [3], user_items.shape[0]))
    before = model.user_factors.copy()
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.partial_fit_users([5], huge)
    np.testing.assert_array_equal(model.user_factors, before)  # nothing stored


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_scores_that_overflow_are_refused(user_items, backend):
    model = fit(user_items, backend)
    # finite factors whose products overflow float32
    model.user_factors = np.full(model.user_factors.shape, 1e20, np.float32)
    model.item_factors = np.full(model.item_factors.shape, 1e20, np.float32)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recommend(0, user_items[0])
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.similar_items(0)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.similar_users(np.arange(3))


def test_a_huge_weight_in_a_recalculated_row_is_refused_or_finite(user_items):
    """A row weighted 1e10 (the CLI's ``--like-weight``) overflows the float32 exact solve."""
    model = fit(user_items)
    row = row_of([1e10] * 3, [1, 2, 3], user_items.shape[1])
    try:
        ids, scores = model.recommend(0, row, recalculate_user=True)
    except ModelFitError:
        return
    assert np.isfinite(scores).all()  # either refused, or finite


# -- serving from many threads ------------------------------------------------------------------


def blas_threads():
    return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info())


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_queries_from_eight_threads_match_sequential_answers(user_items, backend):
    model = fit(user_items, backend, factors=6)
    users = np.arange(0, user_items.shape[0], 5)

    def answer(user):
        liked = user_items[user]
        return (
            model.recommend(user, liked, N=5),
            model.recommend(user, liked, N=5, recalculate_user=True),
            model.similar_items(user % user_items.shape[1], N=5),
            model.similar_users(user, N=5),
            model.explain(user, user_items, itemid=user % user_items.shape[1], N=3)[:2],
        )

    sequential = [answer(user) for user in users]
    before = blas_threads()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(2):
            concurrent = list(pool.map(answer, users))
            for user, (ours, theirs) in enumerate(zip(concurrent, sequential, strict=True)):
                for (ids, scores), (_, expected) in zip(ours[:4], theirs[:4], strict=True):
                    # same inputs, same kernels: equal up to float32 rounding of the products
                    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
                    assert len(ids) == len(expected)
                total, contributions = ours[4]
                np.testing.assert_allclose(total, theirs[4][0], rtol=1e-5, atol=1e-6)
                assert len(contributions) == len(theirs[4][1]), user
    assert blas_threads() == before


def test_blas_limits_are_restored_exactly_after_overlapping_queries(user_items):
    """Two threads' limits overlap without nesting: A in, B in, A out, B out."""
    model = fit(user_items, "cpu")
    before = blas_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with model.backend_.threads():
            a_in.set()
            b_in.wait(30)
            model.recommend(0, user_items[0], N=3)
        a_out.set()

    def second():
        a_in.wait(30)
        with model.backend_.threads():
            b_in.set()
            a_out.wait(30)
            model.recommend(1, user_items[1], N=3)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert blas_threads() == before


@contextlib.contextmanager
def fitting_in_another_thread(model, user_items):
    """Run ``model.fit`` in a thread, held in its first iteration while the block runs."""
    started, release = threading.Event(), threading.Event()

    def wait_in_first_iteration(iteration, seconds, loss):
        started.set()
        release.wait(30)

    first = threading.Thread(
        target=model.fit, args=(user_items,), kwargs={"callback": wait_in_first_iteration}
    )
    first.start()
    try:
        assert started.wait(30)
        yield
    finally:
        release.set()
        first.join()


def test_fit_on_a_model_that_is_fitting_raises(user_items):
    model = AlternatingLeastSquares(factors=4, iterations=3, random_state=0, backend="numpy")
    with fitting_in_another_thread(model, user_items):
        with pytest.raises(RuntimeError, match="already running"):
            model.fit(user_items, show_progress=False)
    reference = fit(user_items, "numpy", iterations=3)
    np.testing.assert_allclose(model.user_factors, reference.user_factors, rtol=1e-5, atol=1e-7)
    model.fit(user_items, show_progress=False)  # and once it is done, fit works again


def test_partial_fit_while_fitting_raises(user_items):
    model = AlternatingLeastSquares(factors=4, iterations=2, random_state=0, backend="numpy")
    with fitting_in_another_thread(model, user_items):
        with pytest.raises(RuntimeError, match="fit is running"):
            model.partial_fit_users([0], user_items[0])


# -- sizes and scalars ------------------------------------------------------------------------


def test_absurd_partial_fit_growth_raises_with_the_sizes(user_items):
    model = fit(user_items, "numpy")
    row = user_items[0]
    with pytest.raises(ValueError, match=r"1,000,000,000.*120"):
        model.partial_fit_users([10**9], row)
    assert model.user_factors.shape == (120, 4)
    model.partial_fit_users([120 + 500], row)  # a gap no larger than the model is fine
    assert model.user_factors.shape == (621, 4)
    with pytest.raises(ValueError, match="itemids"):
        model.partial_fit_items([10**7], user_items.T.tocsr()[0])


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_zero_dimensional_arrays_work_as_scalars(user_items, backend):
    model = fit(user_items, backend)
    liked = user_items[3]
    ids, scores = model.recommend(np.array(3), liked, N=np.array(4))
    expected_ids, expected = model.recommend(3, liked, N=4)
    assert ids.ndim == 1 and len(ids) == 4
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    factors = model.recalculate_user(np.array(3), liked)
    assert factors.shape == (4,)
    ids, _ = model.similar_items(np.array(2), N=np.int64(3))
    assert ids.shape == (3,)
    total, _, _ = model.explain(np.array(3), user_items, itemid=np.array(5))
    assert total == pytest.approx(model.explain(3, user_items, itemid=5)[0])
    scalar = AlternatingLeastSquares(factors=2, regularization=np.array(0.1), alpha=np.array(2.0))
    scalar.fit(user_items, show_progress=False)


def test_ids_given_as_one_scalar_where_a_list_is_expected(user_items):
    model = fit(user_items, "numpy")
    ids, _ = model.recommend(0, user_items[0], N=80, filter_items=np.array(7))
    assert 7 not in ids
    ids, _ = model.similar_items(1, N=5, items=np.int64(9))
    np.testing.assert_array_equal(ids, [9])
    model.partial_fit_users(np.array(3), user_items[3])


# -- properties on random input ----------------------------------------------------------------


@st.composite
def interaction_matrices(draw):
    users = draw(st.integers(1, 25))
    items = draw(st.integers(1, 20))
    density = draw(st.floats(0.05, 0.6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < density) * rng.integers(1, 6, (users, items))
    if not dense.any():
        dense[0, 0] = 1
    if draw(st.booleans()):
        dense = dense * np.where(rng.random((users, items)) < 0.2, -1, 1)
    return scipy.sparse.csr_matrix(dense.astype(np.float32))


PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(matrix=interaction_matrices(), factors=st.integers(1, 6), steps=st.sampled_from([1, 3]))
def test_numba_agrees_with_the_reference(matrix, factors, steps):
    fits = [
        AlternatingLeastSquares(
            factors=factors,
            iterations=2,
            random_state=1,
            cg_steps=steps,
            dtype=np.float64,
            backend=name,
        )
        .fit(matrix, show_progress=False)
        .user_factors
        for name in ("numpy", "cpu")
    ]
    np.testing.assert_allclose(fits[1], fits[0], rtol=1e-6, atol=1e-9)


@PROPERTY_SETTINGS
@given(matrix=interaction_matrices(), factors=st.integers(1, 5))
def test_exact_solver_never_increases_the_loss(matrix, factors):
    matrix = abs(matrix)  # alternating exact minimisation is monotone for confidences >= 1
    losses = []
    model = AlternatingLeastSquares(
        factors=factors,
        iterations=4,
        random_state=0,
        use_cg=False,
        regularization=0.1,
        dtype=np.float64,
        calculate_training_loss=True,
        backend="cpu",
    )
    model.fit(matrix, show_progress=False, callback=lambda i, s, loss: losses.append(loss))
    assert all(b <= a * (1 + 1e-9) + 1e-12 for a, b in zip(losses, losses[1:], strict=False))


@PROPERTY_SETTINGS
@given(matrix=interaction_matrices(), factors=st.integers(1, 5))
def test_cg_with_enough_steps_is_the_exact_solution(matrix, factors):
    matrix = abs(matrix)
    backend = get_backend("cpu")
    rng = np.random.default_rng(0)
    Y = rng.random((matrix.shape[1], factors))
    YtY = backend.gram(Y, 0.1)
    exact, cg = np.zeros((matrix.shape[0], factors)), np.zeros((matrix.shape[0], factors))
    backend.solve(matrix, exact, Y, YtY, None)
    backend.solve(matrix, cg, Y, YtY, factors + 5)
    np.testing.assert_allclose(cg, exact, rtol=1e-6, atol=1e-8)


@PROPERTY_SETTINGS
@given(matrix=interaction_matrices(), N=st.integers(1, 30), data=st.data())
def test_recommend_never_returns_liked_or_filtered_and_is_sorted(matrix, N, data):
    model = AlternatingLeastSquares(factors=3, iterations=1, random_state=0, backend="cpu")
    model.fit(abs(matrix), show_progress=False)
    banned = data.draw(st.lists(st.integers(0, matrix.shape[1] - 1), max_size=5, unique=True))
    users = np.arange(matrix.shape[0])
    ids, scores = model.recommend(users, matrix, N=N, filter_items=banned or None)
    for user in users:
        valid = ids[user] >= 0
        assert not set(ids[user][valid]) & (set(matrix[user].indices) | set(banned))
        assert np.all(np.diff(scores[user][valid]) <= 0)
        assert (ids[user][~valid] == -1).all() and np.isneginf(scores[user][~valid]).all()
        available = matrix.shape[1] - len(set(matrix[user].indices) | set(banned))
        assert valid.sum() == min(available, ids.shape[1])


@PROPERTY_SETTINGS
@given(matrix=interaction_matrices(), threads=st.sampled_from([1, 2]))
def test_same_seed_and_threads_give_bit_identical_factors(matrix, threads):
    fits = [
        AlternatingLeastSquares(
            factors=4, iterations=2, random_state=7, num_threads=threads, backend="cpu"
        ).fit(matrix, show_progress=False)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(fits[0].user_factors, fits[1].user_factors)
    np.testing.assert_array_equal(fits[0].item_factors, fits[1].item_factors)
