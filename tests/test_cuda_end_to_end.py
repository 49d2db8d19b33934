"""``AlternatingLeastSquares(backend="cuda")`` end to end on the emulated device, in CI.

The model fits and answers queries through ``CupyBackend`` with the real kernels compiled for
the CPU (tests/fake_cupy.py, tests/cuda_emulation), in every factor dtype and at every factor
bucket of the kernels, aligned (32 x 1, 2, 4, 8) and not (1, 7, 100, 129, 257), on a matrix
with rows of 0 and 1 entries, a row of two chunks and an empty column.

Fits are compared with the NumPy and Numba backends from the same seed as tests/test_cuda.py
compares whole fits: 1e-2 relative to the largest factor (the bound test_agreement.py uses
against implicit) for float32 and float64 models. A float16 model stores factors in half
precision (2**-11 relative, at every half-iteration) and is compared with the float32 fits
at 3e-2. Queries are compared on the same factors: scores to 1e-5 relative (float32 sums in
another order; float16 factors score in float32 on both sides), ids equal wherever the two
scores of a rank are not that close (never the order of near-ties).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

import als.backends.cupy_cuda as cupy_cuda
from als import AlternatingLeastSquares
from als.backends.cuda_plan import topk_segments
from tests import cuda_emulation, fake_cupy
from tests.conftest import power_law_matrix

pytestmark = pytest.mark.skipif(
    cuda_emulation.compiler() is None, reason="no host C++ compiler (g++) for the emulation"
)

FACTOR_COUNTS = [1, 7, 32, 64, 100, 128, 129, 256, 257]
FIT_TOLERANCE = {np.float16: 3e-2, np.float32: 1e-2, np.float64: 1e-2}


@pytest.fixture
def emulated(monkeypatch):
    launches = fake_cupy.install(monkeypatch)
    cupy_cuda._module.cache_clear()
    yield launches
    cupy_cuda._module.cache_clear()


def end_to_end_matrix():
    """40 users x 300 items: an empty user, a user of one item, a user of every item (two
    chunks of 256), an empty item, a few dislikes."""
    matrix = power_law_matrix(40, 300, 320, seed=3, negative_fraction=0.05).tolil()
    matrix[0, :] = 0
    matrix[1, :] = 0
    matrix[1, 4] = 2.0
    matrix[2, :] = 1.0
    matrix[:, 11] = 0
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix.astype(np.float32)


def relative(got, expected):
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def fit(backend, dtype, factors, matrix, **options):
    settings = {"factors": factors, "iterations": 2, "random_state": 7, "regularization": 0.05}
    model = AlternatingLeastSquares(**settings, **options, dtype=dtype, backend=backend)
    return model.fit(matrix, show_progress=False)


def same_factors_on(backend, model):
    """A model on ``backend`` holding ``model``'s factors (widened from half for the CPU)."""
    dtype = np.float32 if model.dtype == np.float16 else model.dtype
    settings = {name: getattr(model, name) for name in ("factors", "regularization", "cg_steps")}
    copy = AlternatingLeastSquares(**settings, dtype=dtype, backend=backend)
    copy.user_factors = model.user_factors.astype(dtype)
    copy.item_factors = model.item_factors.astype(dtype)
    return copy


def assert_same_ranking(got, expected):
    (ids, scores), (expected_ids, expected_scores) = got, expected
    assert ids.shape == expected_ids.shape
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    differ = ids != expected_ids
    close = np.isclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    assert (close[differ]).all()  # only where two candidates score alike (or both -inf)
    assert ((ids == -1) == (expected_ids == -1)).all()


def assert_same_rankings(cuda_model, reference, matrix):
    users = np.arange(matrix.shape[0])
    liked = matrix[users]
    banned = np.array([0, 3, 299])
    for N in (5, 300):  # 300: more than any user has left, so rows end in -1 / -inf
        assert_same_ranking(
            cuda_model.recommend(users, liked, N=N, filter_items=banned),
            reference.recommend(users, liked, N=N, filter_items=banned),
        )
    assert_same_ranking(
        cuda_model.similar_items(np.arange(20), N=7), reference.similar_items(np.arange(20), N=7)
    )
    assert_same_ranking(
        cuda_model.similar_users(np.arange(20), N=7), reference.similar_users(np.arange(20), N=7)
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("factors", FACTOR_COUNTS)
def test_fit_and_queries_agree_with_numpy_and_numba(emulated, dtype, factors):
    matrix = end_to_end_matrix()
    on_device = fit("cuda", dtype, factors, matrix)
    assert on_device.user_factors.dtype == dtype
    host = np.float32 if dtype == np.float16 else dtype
    for backend in ("numpy", "cpu"):
        other = fit(backend, host, factors, matrix)
        for side in ("user_factors", "item_factors"):
            difference = relative(getattr(on_device, side), getattr(other, side))
            assert difference <= FIT_TOLERANCE[dtype], (backend, side, difference)
    assert (on_device.user_factors[0] == 0).all()  # the empty user
    assert_same_rankings(on_device, same_factors_on("numpy", on_device), matrix)
    kernels = {name.split("<")[0] for name, _, _ in emulated.calls}
    assert kernels == {"cg_sparse", "cg_init", "cg_update", "exclude_ids", "topk_select"}


def assert_same_exact_answers(cuda_model, reference, matrix):
    users, items = np.arange(6), np.arange(6)
    for model in (cuda_model, reference):
        model.answers = (
            model.recalculate_user(users, matrix[users]),
            model.recalculate_item(items, matrix.T.tocsr()[items]),
        )
    for got, expected in zip(cuda_model.answers, reference.answers, strict=True):
        assert relative(got, expected) <= 1e-3
    score, top, _ = cuda_model.explain(5, matrix, itemid=8, N=3)
    expected_score, expected_top, _ = reference.explain(5, matrix, itemid=8, N=3)
    assert score == pytest.approx(expected_score, rel=1e-4, abs=1e-6)
    assert [item for item, _ in top] == [item for item, _ in expected_top]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_exact_solve_agrees_with_numpy(emulated, dtype):
    matrix = end_to_end_matrix()
    on_device = fit("cuda", dtype, 33, matrix, use_cg=False)
    reference = fit("numpy", np.float32 if dtype == np.float16 else dtype, 33, matrix, use_cg=False)
    for side in ("user_factors", "item_factors"):
        assert relative(getattr(on_device, side), getattr(reference, side)) <= FIT_TOLERANCE[dtype]
    # recalculate and explain solve exactly too: on the same factors, as the reference does
    # (1e-3: float32 sums in other orders through a solve; explain's score to 1e-4)
    assert_same_exact_answers(on_device, same_factors_on("numpy", on_device), matrix)


def test_per_row_lambdas_agree_with_numpy(emulated):
    # float64: with nu = 0.5 this matrix's systems are ill-conditioned enough that float32
    # fits of the NumPy and Numba backends differ by 4e-2 from each other; in float64 they
    # agree to 1e-10, and so must the device (test_options.py's bound: 1e-8)
    matrix = end_to_end_matrix()
    options = {"nu": 0.5, "alpha0": 0.2, "confidence": "hkv"}
    on_device = fit("cuda", np.float64, 33, matrix, **options)
    reference = fit("numpy", np.float64, 33, matrix, **options)
    for side in ("user_factors", "item_factors"):
        assert relative(getattr(on_device, side), getattr(reference, side)) <= 1e-8


def test_query_edge_cases_on_the_device(emulated, monkeypatch):
    # integer factors: exact scores with many ties; a user with every item filtered (-inf
    # everywhere); segments of 64 items, so each row's scores are split among several blocks
    # (NaN scores, which a model refuses to hold, are tested on the backend: test_cuda.py)
    monkeypatch.setattr(cupy_cuda, "topk_segments", lambda n, k: topk_segments(n, k, 64))
    rng = np.random.default_rng(1)
    model = AlternatingLeastSquares(factors=4, dtype=np.float32, backend="cuda")
    model.user_factors = rng.integers(-2, 3, size=(6, 4)).astype(np.float32)
    model.item_factors = rng.integers(-2, 3, size=(300, 4)).astype(np.float32)
    reference = same_factors_on("numpy", model)
    liked = scipy.sparse.random(6, 300, density=0.2, format="lil", random_state=2)
    liked[3, :] = 1.0  # everything filtered
    liked = liked.tocsr().astype(np.float32)
    users = np.arange(6)
    for N in (1, 10, 300):
        got = model.recommend(users, liked, N=N)
        assert_same_ranking(got, reference.recommend(users, liked, N=N))
        assert (got[0][3] == -1).all()
    grids = [grid for name, grid, _ in emulated.calls if name.startswith("topk_select")]
    assert max(grid[0] for grid in grids) >= 6 * 4  # several blocks a row
