"""Backend kernels against plain linear algebra and against the NumPy reference backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from als import AlternatingLeastSquares
from als.backends.base import BackendUnavailable, available_backends, get_backend
from als.fitting import training_loss
from tests.conftest import power_law_matrix

ROOT = Path(__file__).resolve().parents[1]


def dense_solution(Cui, Y, regularization):
    """x_u = (Y^T C_u Y + lambda I)^-1 Y^T C_u p_u, written with dense matrices."""
    weights = Cui.toarray().astype(np.float64)
    confidence = np.where(weights != 0, np.abs(weights), 1.0)
    preference = (weights > 0).astype(np.float64)
    Y = Y.astype(np.float64)
    solution = np.zeros((Cui.shape[0], Y.shape[1]))
    for u in range(Cui.shape[0]):
        if Cui.indptr[u] == Cui.indptr[u + 1]:
            continue
        A = Y.T @ (confidence[u][:, None] * Y) + regularization * np.eye(Y.shape[1])
        solution[u] = np.linalg.solve(A, Y.T @ (confidence[u] * preference[u]))
    return solution


def device_inputs(backend, Cui, X, Y):
    return backend.to_device(Cui), backend.to_device(X), backend.to_device(Y)


def test_exact_solve_matches_dense_least_squares(backend_name, small_matrix):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(0)
    Y = rng.random((small_matrix.shape[1], 6))
    X = rng.random((small_matrix.shape[0], 6))
    Cui, X_device, Y_device = device_inputs(backend, small_matrix, X, Y)
    backend.solve(Cui, X_device, Y_device, backend.gram(Y_device, 0.1), None)
    np.testing.assert_allclose(
        backend.to_host(X_device), dense_solution(small_matrix, Y, 0.1), rtol=1e-5, atol=1e-8
    )


def test_loss_parts_match_the_dense_formula(backend_name):
    """Each part of the loss against a dense statement of it, independent of every backend."""
    backend = get_backend(backend_name)
    Cui = power_law_matrix(60, 40, 500, seed=4, negative_fraction=0.2)
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((60, 5)), rng.standard_normal((40, 5))
    weights, scores = Cui.toarray(), X @ Y.T
    stored = weights != 0
    confidence, liked = np.abs(weights), weights > 0
    parts = backend.loss_parts(*device_inputs(backend, Cui, X, Y))
    # float64 factors: only the summation order differs from the dense sums
    observed = np.sum((confidence * (1 + scores**2 - 2 * liked * scores))[stored])
    assert parts.observed == pytest.approx(observed, rel=1e-9)
    assert parts.unobserved == pytest.approx(np.sum((scores**2)[~stored]), rel=1e-9)
    assert parts.confidence == pytest.approx(confidence[stored].sum(), rel=1e-12)
    assert parts.missing == (~stored).sum()
    loss = training_loss(backend, *device_inputs(backend, Cui, X, Y), 0.3)
    expected = (observed + np.sum((scores**2)[~stored]) + 0.3 * (np.sum(X**2) + np.sum(Y**2))) / (
        confidence[stored].sum() + (~stored).sum()
    )
    assert loss == pytest.approx(expected, rel=1e-9)


def test_enough_cg_steps_reach_the_exact_solution(backend_name, small_matrix):
    backend = get_backend(backend_name)
    rng = np.random.default_rng(1)
    factors = 5
    Y = rng.random((small_matrix.shape[1], factors))
    X = np.zeros((small_matrix.shape[0], factors))
    Cui, X_device, Y_device = device_inputs(backend, small_matrix, X, Y)
    # in exact arithmetic CG converges in `factors` steps; allow a few more for rounding
    backend.solve(Cui, X_device, Y_device, backend.gram(Y_device, 0.1), factors + 3)
    np.testing.assert_allclose(
        backend.to_host(X_device), dense_solution(small_matrix, Y, 0.1), rtol=1e-5, atol=1e-8
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cg_steps", [1, 3, None])
def test_backends_agree_with_reference(backend_name, dtype, cg_steps):
    reference, backend = get_backend("numpy"), get_backend(backend_name)
    Cui = power_law_matrix(400, 150, 5000, seed=3, negative_fraction=0.1)
    rng = np.random.default_rng(2)
    X = (rng.random((400, 12)) * 0.1).astype(dtype)
    Y = rng.random((150, 12)).astype(dtype)
    results = []
    for each in (reference, backend):
        C, Xd, Yd = device_inputs(each, Cui, X.copy(), Y)
        each.solve(C, Xd, Yd, each.gram(Yd, 0.05), cg_steps)
        results.append((each.to_host(Xd), training_loss(each, C, Xd, Yd, 0.05)))
    rtol = 2e-3 if dtype == np.float32 else 1e-9
    scale = np.abs(results[0][0]).max()
    assert np.abs(results[0][0] - results[1][0]).max() <= rtol * scale
    assert results[1][1] == pytest.approx(results[0][1], rel=1e-5)


def test_topk_orders_filters_and_pads(backend_name):
    backend = get_backend(backend_name)
    factors = np.array([[1.0], [3.0], [2.0], [3.0], [0.5]], dtype=np.float32)
    queries = np.array([[1.0], [-1.0], [2.0]], dtype=np.float32)
    exclude = scipy.sparse.csr_matrix(
        (np.ones(5, np.float32), ([0, 1, 1, 1, 1], [1, 0, 1, 2, 3])), shape=(3, 5)
    )
    ids, scores = backend.topk(
        backend.to_device(queries),
        backend.to_device(factors),
        4,
        exclude=backend.to_device(exclude),
        exclude_all=backend.to_device(np.array([4])),
    )
    # ties (items 1 and 3) are broken by id; excluded ids never appear; short rows are padded
    assert ids.tolist() == [[3, 2, 0, -1], [-1, -1, -1, -1], [1, 3, 2, 0]]
    assert scores[0, :3].tolist() == [3.0, 2.0, 1.0]
    assert np.isneginf(scores[0, 3]) and np.isneginf(scores[1]).all()


def test_topk_matches_reference_on_random_scores(backend_name):
    reference, backend = get_backend("numpy"), get_backend(backend_name)
    rng = np.random.default_rng(4)
    queries = rng.standard_normal((64, 8)).astype(np.float32)
    factors = rng.standard_normal((500, 8)).astype(np.float32)
    exclude = scipy.sparse.random(64, 500, density=0.05, format="csr", random_state=5)
    norms = np.linalg.norm(factors, axis=1)
    exact = factors.astype(np.float64)
    true_scores = queries.astype(np.float64) @ (exact / np.linalg.norm(exact, axis=1)[:, None]).T
    for k in (1, 10, 500):
        expected = reference.topk(queries, factors, k, exclude, np.arange(3), norms)
        got = backend.topk(
            backend.to_device(queries),
            backend.to_device(factors),
            k,
            backend.to_device(exclude),
            backend.to_device(np.arange(3)),
            backend.to_device(norms),
        )
        assert_same_topk(got, expected, true_scores, exclude, np.arange(3), SCORE_TOLERANCE)


#: float32 scores q.f/|f| of 8 standard-normal factors: each of the 8 products and sums rounds
#: by at most 2^-24 relative, so two summation orders (BLAS blocks vs the reference's matmul)
#: differ by under 16 * 6e-8 * |q| (|q| < 4.1 here): 4e-6. We allow 1e-5 absolute.
SCORE_TOLERANCE = 1e-5


def assert_same_topk(got, expected, true_scores, exclude, exclude_all, atol):
    """Same top-k by score: ids may differ only where their exact scores tie within atol."""
    (ids, scores), (expected_ids, expected_scores) = got, expected
    assert ids.shape == expected_ids.shape
    padded = expected_ids == -1
    np.testing.assert_array_equal(ids == -1, padded)
    np.testing.assert_allclose(scores[~padded], expected_scores[~padded], rtol=0, atol=atol)
    for row, (ours, theirs) in enumerate(zip(ids, expected_ids, strict=True)):
        ours, theirs = ours[ours >= 0], theirs[theirs >= 0]
        assert len(set(ours.tolist())) == len(ours)
        assert not set(ours.tolist()) & (set(exclude[row].indices.tolist()) | set(exclude_all))
        # a swapped id must score (exactly computed) what the reference's id at that rank does
        np.testing.assert_allclose(
            true_scores[row, ours], true_scores[row, theirs], rtol=0, atol=atol
        )


def test_numba_results_do_not_depend_on_thread_count(medium_matrix):
    fits = [
        AlternatingLeastSquares(
            factors=16, iterations=3, random_state=0, num_threads=threads, backend="cpu"
        ).fit(medium_matrix, show_progress=False)
        for threads in (1, 2, 1)
    ]
    for other in fits[1:]:
        np.testing.assert_array_equal(fits[0].user_factors, other.user_factors)
        np.testing.assert_array_equal(fits[0].item_factors, other.item_factors)


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        get_backend("tpu")


def test_auto_picks_a_backend_that_runs():
    reasons = available_backends()
    assert reasons["numpy"] is None and reasons["cpu"] is None
    expected = "cuda" if reasons["cuda"] is None else "cpu"
    assert get_backend("auto").name == expected


def test_unavailable_cuda_says_why():
    if available_backends()["cuda"] is None:
        pytest.skip("a CUDA device is usable here, so nothing is missing")
    with pytest.raises(BackendUnavailable, match="cuda"):
        get_backend("cuda")
    with pytest.raises(BackendUnavailable):
        AlternatingLeastSquares(use_gpu=True).fit(power_law_matrix(5, 5, 10))


@pytest.mark.parametrize("factors", [8, 128, 256, 512])
def test_numba_cg_tasks_respect_their_limits(factors):
    from als.backends import numba_kernels
    from als.backends.numba_cpu import task_limits

    indptr = np.cumsum([0, *np.random.default_rng(6).zipf(1.6, 3000).clip(0, 5000)])
    limits = task_limits(3000, factors, 4, threads=2, cache=1 << 21)
    min_rows, max_rows, max_entries, dense_entries = limits
    assert 1 <= min_rows <= max_rows and max_entries >= 1 and dense_entries >= factors
    # YtY of 256 x 256 float32 is an eighth of the 2 MiB cache: from there, 128 rows
    assert (min_rows >= 128) == (factors >= 256)
    bounds = numba_kernels.task_bounds(indptr.astype(np.int64), *limits)
    assert bounds[0] == 0 and bounds[-1] == 3000 and np.all(np.diff(bounds) >= 1)
    for first, last in zip(bounds[:-1], bounds[1:], strict=True):
        rows, entries = last - first, indptr[last] - indptr[first]
        assert rows <= max_rows
        # past the entry limit only to reach the minimum rows, while short of dense_entries
        if entries > max_entries and rows > 1:
            assert rows <= min_rows and indptr[last - 1] - indptr[first] < dense_entries


def _greedy_task_bounds(indptr, min_rows, max_rows, max_entries, dense_entries):
    """The rule of task_bounds, a row at a time."""
    n_rows, bounds, first = len(indptr) - 1, [0], 0
    while first < n_rows:
        last = first + 1
        while last < n_rows and last - first < max_rows and (
            (last - first < min_rows and indptr[last] - indptr[first] < dense_entries)
            or indptr[last + 1] - indptr[first] <= max_entries
        ):
            last += 1
        bounds.append(last)
        first = last
    return bounds


@pytest.mark.parametrize(
    "limits",
    [
        (1, 32, 50, 10**9),
        (4, 8, 1, 10**9),
        (16, 16, 10**9, 10**9),
        (1, 1, 0, 0),
        (3, 40, 200, 10**9),
        (16, 32, 20, 60),
        (128, 128, 5, 300),
        (8, 64, 0, 1),
    ],
)
def test_task_bounds_follow_the_row_at_a_time_rule(limits):
    from als.backends import numba_kernels

    rng = np.random.default_rng(11)
    # power-law rows, empty rows only, one row, no rows
    for counts in (rng.zipf(1.5, 500).clip(0, 400), np.zeros(7, np.int64), [5], []):
        indptr = np.cumsum([0, *counts]).astype(np.int64)
        got = numba_kernels.task_bounds(indptr, *limits)
        assert got.dtype == np.int64
        assert got.tolist() == _greedy_task_bounds(indptr, *limits)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factors", [1, 7, 16, 33])
def test_numba_cg_prefetch_changes_no_result(dtype, factors):
    # a fetch hint reads nothing the kernel uses: the factors are bit-identical with it on
    # and off. Odd row sizes put rows across cache lines; rows of 0-30 entries exercise
    # the groups of eight, the rest loop, and fetches ahead into the next rows' entries.
    from als.backends import numba_kernels

    rng = np.random.default_rng(9)
    Cui = power_law_matrix(40, 25, 400, seed=3).astype(dtype)
    Cui.data = (1 + 4 * rng.random(Cui.nnz)).astype(dtype)
    Y = rng.standard_normal((25, factors)).astype(dtype)
    YtY = Y.T @ Y + dtype(0.1) * np.eye(factors, dtype=dtype)
    X0 = rng.standard_normal((40, factors)).astype(dtype)
    indptr, indices = Cui.indptr.astype(np.int64), Cui.indices.astype(np.int32)
    bounds = numba_kernels.task_bounds(indptr, 1, 4, 50, 10**9)
    results = []
    for prefetch in (False, True):
        X = X0.copy()
        numba_kernels.cg_solve(
            indptr, indices, Cui.data, X, Y, YtY, 3, bounds, dtype(0), dtype(1),
            np.zeros(0, dtype), prefetch, 2,
        )  # fmt: skip
        results.append(X)
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], X0)


def test_numba_exact_solve_with_a_zero_pivot_gives_nan_not_an_exception():
    # Y = 0 makes every row's matrix 0: the Cholesky pivot is exactly zero. IEEE division
    # gives NaN, which the model's finiteness check turns into advice; Python's semantics
    # would raise ZeroDivisionError out of the kernel instead
    from als.backends import numba_kernels

    Cui = power_law_matrix(6, 5, 20, seed=4)
    X = np.ones((6, 3), np.float32)
    Y = np.zeros((5, 3), np.float32)
    numba_kernels.exact_solve(
        Cui.indptr.astype(np.int64), Cui.indices.astype(np.int32), Cui.data, X, Y,
        np.zeros((3, 3), np.float32), np.float32(0), np.float32(1), np.zeros(0, np.float32),
    )  # fmt: skip
    assert np.isnan(X[np.diff(Cui.indptr) > 0]).all()


def test_prefetch_rule_follows_the_cache_and_the_row_size():
    from als.backends.numba_cpu import prefetch_rows

    cache = 1 << 21
    assert prefetch_rows(20_000, 512, cache)  # 10 MB of 512-byte rows
    assert not prefetch_rows(3_000, 512, cache)  # 1.5 MB: within L2
    assert not prefetch_rows(100_000, 128, cache)  # 128-byte rows: the fetches cost more
    assert prefetch_rows(3_000, 512, cache=1 << 18)  # a smaller cache


@pytest.mark.parametrize("query_tile, item_tile", [(1, 16), (3, 7), (64, 1000), (8, 150)])
def test_numba_fused_topk_is_the_same_for_any_tiles(query_tile, item_tile):
    # tiles smaller than the catalogue: exclusions and heaps carry across item tiles
    from als.backends import numba_kernels

    rng = np.random.default_rng(7)
    queries = rng.standard_normal((20, 6)).astype(np.float32)
    factors = rng.standard_normal((300, 6)).astype(np.float32)
    exclude = scipy.sparse.random(20, 300, density=0.1, format="csr", random_state=8)
    excluded_for_all = np.zeros(300, np.bool_)
    excluded_for_all[[0, 150, 299]] = True
    norms = np.linalg.norm(factors, axis=1).astype(np.float32)
    expected = get_backend("numpy").topk(queries, factors, 12, exclude, [0, 150, 299], norms)
    ids, scores = np.empty((20, 12), np.int32), np.empty((20, 12), np.float32)
    numba_kernels.fused_topk(
        queries,
        factors,
        norms,
        exclude.indptr.astype(np.int64),
        exclude.indices.astype(np.int32),
        excluded_for_all,
        query_tile,
        item_tile,
        ids,
        scores,
    )
    # random scores have no ties: ids must match; scores to float32 rounding of the product
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("item_tile", [64, 200, 1000])
def test_numba_fused_topk_with_ties_across_segments(dtype, item_tile):
    # integer scores: many ties at the bar, in and across the selection's segments (64
    # scores) and item tiles; the top-k must hold the k best scores whichever tied ids win
    from als.backends import numba_kernels

    rng = np.random.default_rng(9)
    queries = rng.integers(-2, 3, (30, 4)).astype(dtype)
    factors = rng.integers(-2, 3, (900, 4)).astype(dtype)
    exclude = scipy.sparse.random(30, 900, density=0.2, format="csr", random_state=3)
    exclude.sort_indices()
    excluded_for_all = np.zeros(900, np.bool_)
    excluded_for_all[rng.choice(900, 40, replace=False)] = True
    k = 25
    ids, scores = np.empty((30, k), np.int32), np.empty((30, k), dtype)
    numba_kernels.fused_topk(
        queries,
        factors,
        np.zeros(0, dtype),
        exclude.indptr.astype(np.int64),
        exclude.indices.astype(np.int32),
        excluded_for_all,
        7,
        item_tile,
        ids,
        scores,
    )
    allowed = ~exclude.toarray().astype(bool) & ~excluded_for_all
    exact = queries @ factors.T
    for row in range(30):
        candidates = np.flatnonzero(allowed[row])
        # integer products are exact in any order: scores equal the k best exactly
        expected = np.sort(exact[row, candidates])[::-1][:k]
        np.testing.assert_array_equal(scores[row], expected)
        assert len(set(ids[row])) == k and allowed[row, ids[row]].all()
        np.testing.assert_array_equal(exact[row, ids[row]], scores[row])


def test_numba_topk_tiles_share_queries_evenly_and_fit_the_cache():
    from als.backends.numba_cpu import TOPK_QUERY_TILE, topk_tiles

    cache = 1 << 21
    for n_queries in (1, 7, 1000, 1100, 5000, 100_000):
        for factors in (8, 128, 512):
            for itemsize in (4, 8):
                for threads in (1, 2, 3, 16):
                    query_tile, item_tile = topk_tiles(
                        n_queries, factors, itemsize, threads, cache
                    )
                    assert 1 <= query_tile <= TOPK_QUERY_TILE
                    # every thread gets a task when there are queries enough
                    assert -(-n_queries // query_tile) >= min(threads, n_queries)
                    # the scratch scores in half the cache, the factor rows in a quarter
                    assert query_tile * item_tile * itemsize <= cache // 2
                    assert item_tile * factors * itemsize <= cache // 4 or item_tile == 16


@pytest.mark.parametrize("block_size", [3, 12])
def test_subspace_solve_agrees_with_reference(backend_name, block_size):
    reference, backend = get_backend("numpy"), get_backend(backend_name)
    Cui = power_law_matrix(300, 120, 4000, seed=9, negative_fraction=0.1)
    rng = np.random.default_rng(10)
    X = (rng.random((300, 12)) * 0.1).astype(np.float64)
    Y = rng.random((120, 12))
    results = []
    for each in (reference, backend):
        C, Xd, Yd = device_inputs(each, Cui, X.copy(), Y)
        each.solve_subspace(C, Xd, Yd, each.gram(Yd, 0.05), block_size, sweeps=2)
        results.append(each.to_host(Xd))
    # float64, same arithmetic in another order: agreement to rounding
    np.testing.assert_allclose(results[1], results[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("block_size", [4, 12])
def test_subspace_solve_takes_per_row_regularization(backend_name, block_size):
    # one full-width block (12) is one exact solve: it must equal the reference's exact
    # solve with the same per-row lambdas; narrow blocks must agree with the reference's
    # subspace solve
    reference, backend = get_backend("numpy"), get_backend(backend_name)
    Cui = power_law_matrix(200, 90, 2500, seed=21, negative_fraction=0.1)
    rng = np.random.default_rng(22)
    X = (rng.random((200, 12)) * 0.1).astype(np.float64)
    Y = rng.random((90, 12))
    lambdas = rng.random(200) * 2.0
    C, Xd, Yd = device_inputs(reference, Cui, X.copy(), Y)
    if block_size == 12:
        reference.solve(C, Xd, Yd, reference.gram(Yd, 0.0), None, reference.to_device(lambdas))
    else:
        reference.solve_subspace(
            C, Xd, Yd, reference.gram(Yd, 0.0), block_size, 2, reference.to_device(lambdas)
        )
    expected = reference.to_host(Xd)
    C, Xd, Yd = device_inputs(backend, Cui, X.copy(), Y)
    backend.solve_subspace(
        C, Xd, Yd, backend.gram(Yd, 0.0), block_size, 2, backend.to_device(lambdas)
    )
    # float64, the same systems solved in another order: agreement to rounding
    np.testing.assert_allclose(backend.to_host(Xd), expected, rtol=1e-8, atol=1e-11)
    # and the per-row lambdas matter: without them the result differs
    C, Xd, Yd = device_inputs(backend, Cui, X.copy(), Y)
    backend.solve_subspace(C, Xd, Yd, backend.gram(Yd, 0.0), block_size, 2)
    assert not np.allclose(backend.to_host(Xd), expected, rtol=1e-3)


@pytest.mark.parametrize("block_size, sweeps", [(6, 1), (2, 200)])
def test_subspace_solve_reaches_the_exact_solution(backend_name, small_matrix, block_size, sweeps):
    # one full-width block is one exact solve; narrow blocks converge to it (block
    # Gauss-Seidel on a positive definite system) given enough sweeps
    backend = get_backend(backend_name)
    rng = np.random.default_rng(11)
    Y = rng.random((small_matrix.shape[1], 6))
    X = rng.random((small_matrix.shape[0], 6))
    Cui, X_device, Y_device = device_inputs(backend, small_matrix, X, Y)
    backend.solve_subspace(Cui, X_device, Y_device, backend.gram(Y_device, 0.1), block_size, sweeps)
    np.testing.assert_allclose(
        backend.to_host(X_device), dense_solution(small_matrix, Y, 0.1), rtol=1e-6, atol=1e-9
    )


def test_ials_plus_plus_loss_decreases_to_the_exact_solvers(backend_name):
    Cui = power_law_matrix(200, 80, 3000, seed=12)
    exact = AlternatingLeastSquares(
        factors=8, iterations=40, use_cg=False, random_state=0, backend=backend_name,
        dtype=np.float64,
    ).fit(Cui, show_progress=False)
    backend = exact.backend_
    C = backend.to_device(Cui)
    exact_loss = training_loss(backend, C, exact.user_factors, exact.item_factors, 0.01)
    losses = []
    AlternatingLeastSquares(
        factors=8, iterations=40, solver="ials++", block_size=3, random_state=0,
        backend=backend_name, dtype=np.float64, calculate_training_loss=True,
    ).fit(Cui, show_progress=False, callback=lambda it, seconds, loss: losses.append(loss))
    # each block step minimises the loss over its block exactly: never an increase (up to
    # rounding), and the same minimum the exact solver's alternation reaches
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] == pytest.approx(exact_loss, rel=1e-3)


def test_ials_plus_plus_with_frequency_scaled_lambda_agrees_with_reference(backend_name):
    # nu != 0 sends per-row lambdas through solve_side into solve_subspace
    Cui = power_law_matrix(120, 80, 1000, seed=14)
    fitted = [
        AlternatingLeastSquares(
            factors=8, iterations=5, solver="ials++", block_size=3, nu=0.5, random_state=0,
            backend=name, dtype=np.float64,
        ).fit(Cui, show_progress=False)
        for name in ("numpy", backend_name)
    ]
    plain = AlternatingLeastSquares(
        factors=8, iterations=5, solver="ials++", block_size=3, random_state=0,
        backend=backend_name, dtype=np.float64,
    ).fit(Cui, show_progress=False)
    # float64, the same block systems solved in another order over 5 alternations: the
    # rounding differences stay far below 1e-6 relative
    np.testing.assert_allclose(
        fitted[1].user_factors, fitted[0].user_factors, rtol=1e-6, atol=1e-9
    )
    assert not np.allclose(plain.user_factors, fitted[1].user_factors, rtol=1e-2)


def test_ials_plus_plus_parameters_are_checked_and_saved(tmp_path):
    Cui = power_law_matrix(30, 20, 200, seed=13)
    with pytest.raises(ValueError, match="solver must be one of cg, ials\\+\\+, got 'als'"):
        AlternatingLeastSquares(solver="als").fit(Cui, show_progress=False)
    with pytest.raises(ValueError, match="block_size"):
        AlternatingLeastSquares(solver="ials++", block_size=0).fit(Cui, show_progress=False)
    model = AlternatingLeastSquares(
        factors=4, iterations=2, solver="ials++", block_size=2, random_state=0, backend="cpu"
    ).fit(Cui, show_progress=False)
    model.save(tmp_path / "model")
    loaded = AlternatingLeastSquares.load(tmp_path / "model.npz")
    assert (loaded.solver, loaded.block_size) == ("ials++", 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunks", [1, 3, 50])
def test_numba_gram_over_blocks_of_rows_matches_numpy(dtype, chunks):
    from als.backends import numba_kernels

    Y = np.random.default_rng(11).standard_normal((40, 9)).astype(dtype)
    for threads in (1, 0):
        YtY = numba_kernels.gram(Y, chunks, threads)
        assert YtY.dtype == dtype and np.array_equal(YtY, YtY.T)
        # sums of 40 products of standard normals: float32 rounding ~1e-5 of the ~40 scale
        tolerance = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(YtY, Y.T.astype(np.float64) @ Y, rtol=tolerance, atol=tolerance)


# -- bad input never reaches a kernel; no cache folder is no failure ----------------------------


def run_child(code, timeout=120, cwd=ROOT, **env):
    """Run ``code`` in a fresh interpreter in ``cwd``; return its completed process."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_narrowing_to_int32_is_checked():
    from als.backends.base import as_int32

    np.testing.assert_array_equal(as_int32(np.array([0, 5], np.int64), "ids", 10), [0, 5])
    assert as_int32(np.array([2**31 - 1]), "ids").dtype == np.int32
    with pytest.raises(ValueError, match="2,147,483,648.*int32"):
        as_int32(np.array([1, 2**31], np.int64), "ids")
    with pytest.raises(ValueError, match="int32"):
        as_int32(np.array([-(2**31) - 1], np.int64), "ids", None)


KERNEL_INDEX = """
import numpy as np, scipy.sparse as sp
from als.backends.base import get_backend
backend = get_backend("cpu")
factors = np.ones((4, 2), np.float32)
big = 2**31 + 5
exclude = sp.csr_matrix((np.ones(1, np.float32), (np.array([0]), np.array([big]))),
                        shape=(1, big + 1))
try:
    backend.topk(np.ones((1, 2), np.float32), factors, 2, exclude=exclude)
    print("ran")
except ValueError as exc:
    print("refused", exc)
"""


def test_an_index_beyond_int32_never_reaches_a_kernel():
    done = run_child(KERNEL_INDEX)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused") and "int32" in done.stdout


UNCACHED = """
import warnings
import numpy as np, scipy.sparse as sp
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from backends.base import get_backend  # the copy, as a package of its own
    backend = get_backend("cpu")
X, Y = np.zeros((3, 2), np.float32), np.full((4, 2), 0.1, np.float32)
Cui = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
with backend.threads():
    backend.solve(Cui, X, Y, Y.T @ Y + 0.1 * np.eye(2, dtype=np.float32), None)
assert np.isfinite(X).all() and np.abs(X).sum() > 0
messages = [str(w.message) for w in caught if "uncached" in str(w.message)]
print(len(messages))
"""


def test_without_a_writable_cache_the_cpu_backend_runs_uncached(tmp_path):
    # a copy of the backends whose __pycache__ is a file, HOME and NUMBA_CACHE_DIR under a
    # file: no cache folder can be made anywhere, even by root
    package = tmp_path / "backends"
    package.mkdir()
    for source in (ROOT / "backends").glob("*.py"):
        (package / source.name).write_bytes(source.read_bytes())
    (package / "__pycache__").write_text("not a folder")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        "PYTHONPATH": str(tmp_path),
        "HOME": str(blocker / "home"),
        "NUMBA_CACHE_DIR": str(blocker / "numba"),
        "XDG_CACHE_HOME": str(blocker / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = run_child(UNCACHED, timeout=300, cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"  # one warning, not one per kernel
