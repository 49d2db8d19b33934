"""The opt-in model options against dense linear algebra and the NumPy reference backend.

Every option is checked twice: its meaning, against the objective written out with dense
matrices (``dense_user_solution``, ``dense_loss``), and its implementation on each backend,
against the NumPy reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from als import AlternatingLeastSquares
from als.backends.base import BackendUnavailable, get_backend
from als.errors import InvalidValueError
from als.fitting import SolverSettings, confidence, initial_factors
from tests.conftest import power_law_matrix

OPTIONS = [
    {"confidence": "hkv", "alpha": 2.0},
    {"confidence": "log", "alpha": 3.0, "epsilon": 0.5},
    {"alpha0": 0.2},
    {"nu": 1.0, "regularization": 0.002},
    {"nu": 0.5, "alpha0": 0.3, "confidence": "hkv", "regularization": 0.01},
]


@pytest.fixture(scope="module")
def ratings():
    # positive weights only: implicit's loss adds c, not c p^2, for disliked entries, so
    # the dense objective below is its loss only where every stored entry is liked
    return power_law_matrix(60, 40, 500, seed=3)


def dense_weights(matrix, params):
    """Per-cell weights and the confidence of every stored cell, from the stated formulas."""
    r = matrix.toarray().astype(np.float64)
    alpha, function = params.get("alpha", 1.0), params.get("confidence", "implicit")
    c = {
        "implicit": alpha * r,
        "hkv": 1 + alpha * r,
        "log": 1 + alpha * np.log1p(r / params.get("epsilon", 1.0)),
    }[function]
    return np.where(r > 0, c, params.get("alpha0", 1.0)), (r > 0).astype(np.float64)


def dense_lambdas(matrix, params, axis):
    """lambda * (n + alpha0 * n_other) ** nu for every row (axis 1) or column (axis 0)."""
    counts = (matrix.toarray() != 0).sum(axis=axis).astype(np.float64)
    other = matrix.shape[axis]
    alpha0, nu = params.get("alpha0", 1.0), params.get("nu", 0.0)
    return params.get("regularization", 0.01) * (counts + alpha0 * other) ** nu


def dense_user_solution(matrix, Y, params):
    """argmin_x of the stated objective for every user, Y fixed, by dense normal equations."""
    weights, preference = dense_weights(matrix, params)
    lambdas = dense_lambdas(matrix, params, axis=1)
    Y = Y.astype(np.float64)
    out = np.zeros((matrix.shape[0], Y.shape[1]))
    for u in range(matrix.shape[0]):
        A = Y.T @ (weights[u][:, None] * Y) + lambdas[u] * np.eye(Y.shape[1])
        out[u] = np.linalg.solve(A, Y.T @ (weights[u] * preference[u]))
    return out


def dense_loss(matrix, X, Y, params):
    """The stated objective, normalised by sum of stored confidences + alpha0 * missing."""
    weights, preference = dense_weights(matrix, params)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    error = (weights * (preference - X @ Y.T) ** 2).sum()
    penalty = (dense_lambdas(matrix, params, axis=1) * (X**2).sum(axis=1)).sum()
    penalty += (dense_lambdas(matrix, params, axis=0) * (Y**2).sum(axis=1)).sum()
    return (error + penalty) / weights.sum()


def model(params, backend, **extra):
    settings = {"factors": 6, "iterations": 3, "random_state": 7, "dtype": np.float64}
    return AlternatingLeastSquares(**{**settings, **params, **extra}, backend=backend)


@pytest.mark.parametrize("params", OPTIONS)
def test_exact_user_solve_minimises_the_stated_objective(params, ratings, backend_name):
    fitted = model(params, backend_name, use_cg=False).fit(ratings, show_progress=False)
    Y = fitted.item_factors
    users = np.arange(ratings.shape[0])
    # recalculate_user solves every user exactly given the item factors
    expected = dense_user_solution(ratings, Y, params)
    # confidences are float32 (relative rounding 6e-8), amplified by the systems' conditioning
    atol = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(fitted.recalculate_user(users, ratings), expected, atol=atol)


@pytest.mark.parametrize("params", OPTIONS)
def test_reported_loss_is_the_stated_objective(params, ratings, backend_name):
    losses = []
    fitted = model(params, backend_name, calculate_training_loss=True)
    fitted.fit(ratings, show_progress=False, callback=lambda it, s, loss: losses.append(loss))
    expected = dense_loss(ratings, fitted.user_factors, fitted.item_factors, params)
    # float64 sums in different orders, of confidences rounded to float32
    np.testing.assert_allclose(losses[-1], expected, rtol=1e-6)


@pytest.mark.parametrize("params", OPTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend_name", ["cpu", "cuda"])
def test_fit_with_options_matches_the_numpy_reference(params, dtype, backend_name):
    try:
        get_backend(backend_name)
    except BackendUnavailable as exc:
        pytest.skip(f"backend {backend_name!r} cannot run here: {exc}")
    matrix = power_law_matrix(300, 200, 4000, seed=5)
    fits = [
        model({**params, "init_stddev": 0.1}, name, dtype=dtype).fit(matrix, show_progress=False)
        for name in ("numpy", backend_name)
    ]
    # 3 CG steps per row amplify summation-order rounding: float32 needs a looser bound
    rtol = 2e-3 if dtype == np.float32 else 1e-8
    for side in ("user_factors", "item_factors"):
        expected, actual = (getattr(f, side) for f in fits)
        scale = np.abs(expected).max()
        np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def test_per_row_lambda_in_solve_matches_dense(backend_name):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(2)
    matrix = power_law_matrix(30, 20, 200, seed=1, dtype=np.float64).astype(np.float32)
    Y = rng.random((20, 4))
    lambdas = rng.random(30) + 0.1
    for steps in (None, 10):  # CG converges in 4 steps exactly; 10 for rounding
        X = backend.to_device(np.zeros((30, 4)))
        Y_device = backend.to_device(Y)
        backend.solve(
            backend.to_device(matrix),
            X,
            Y_device,
            backend.gram(Y_device, 0.0),
            steps,
            backend.to_device(lambdas),
        )
        weights = np.where(matrix.toarray() > 0, matrix.toarray(), 1.0)
        for u in range(30):
            if matrix.indptr[u] == matrix.indptr[u + 1]:
                continue
            A = Y.T @ (weights[u][:, None] * Y) + lambdas[u] * np.eye(4)
            b = Y.T @ (weights[u] * (matrix.toarray()[u] > 0))
            # float64 Cholesky/CG against LAPACK on well-conditioned 4x4 systems
            np.testing.assert_allclose(backend.to_host(X)[u], np.linalg.solve(A, b), rtol=1e-6)


def test_confidence_functions():
    matrix = power_law_matrix(10, 8, 40, seed=0, negative_fraction=0.3)
    r = matrix.data.astype(np.float64)
    hkv = confidence(matrix, 2.0, "hkv").data
    log = confidence(matrix, 2.0, "log", epsilon=0.5).data
    # float32 results of float64 formulas
    np.testing.assert_allclose(hkv, np.sign(r) * (1 + 2 * np.abs(r)), rtol=1e-6)
    np.testing.assert_allclose(log, np.sign(r) * (1 + 2 * np.log1p(np.abs(r) / 0.5)), rtol=1e-6)
    np.testing.assert_array_equal(confidence(matrix, 2.0).data, matrix.data * np.float32(2.0))


def test_default_initialisation_is_implicits_and_init_stddev_scales_normal_draws():
    default = initial_factors(np.random.default_rng(0), 500, 16, np.float32)
    expected = np.random.default_rng(0).random((500, 16), dtype=np.float32) * np.float32(0.01)
    np.testing.assert_array_equal(default, expected)
    drawn = initial_factors(np.random.default_rng(0), 4000, 16, np.float64, stddev=0.4)
    # 64,000 normal draws: the sample std is within 2% of 0.4 / 4 with overwhelming odds
    assert abs(drawn.std() - 0.1) < 0.002
    assert abs(drawn.mean()) < 0.002


def test_default_options_are_implicits_model():
    settings = SolverSettings.from_model(AlternatingLeastSquares())
    assert settings.implicit_model and settings.init_stddev is None
    assert settings.gram_regularization == settings.solve_regularization


@pytest.mark.parametrize(
    "params, name",
    [
        ({"confidence": "square"}, "confidence"),
        ({"alpha0": 0.0}, "alpha0"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"nu": float("nan")}, "nu"),
        ({"init_stddev": 0.0}, "init_stddev"),
    ],
)
def test_bad_option_names_the_parameter(params, name, ratings):
    with pytest.raises(InvalidValueError, match=name):
        AlternatingLeastSquares(**params, backend="numpy").fit(ratings, show_progress=False)


def test_options_survive_save_and_load(tmp_path, ratings):
    params = {"confidence": "log", "epsilon": 2.0, "alpha0": 0.5, "nu": 1.0, "init_stddev": 0.1}
    fitted = model(params, "numpy").fit(ratings, show_progress=False)
    fitted.save(tmp_path / "m.npz")
    loaded = AlternatingLeastSquares.load(tmp_path / "m.npz", backend="numpy")
    for key, value in params.items():
        assert getattr(loaded, key) == value


def test_fit_distributed_refuses_the_options_it_does_not_implement(ratings):
    pytest.importorskip("dask.distributed", reason="the Dask fit needs dask[distributed]")
    from als.distributed import fit_distributed

    # refused before the cluster is touched: no client is needed to see the error
    with pytest.raises(InvalidValueError, match="fit_distributed supports implicit's model"):
        fit_distributed(None, AlternatingLeastSquares(alpha0=0.5), ratings, show_progress=False)
    with pytest.raises(InvalidValueError, match="fit_distributed supports implicit's model"):
        model = AlternatingLeastSquares(confidence="log", nu=1.0)
        fit_distributed(None, model, ratings, show_progress=False)
