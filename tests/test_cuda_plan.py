"""The CUDA backend's host side without a GPU: plan, emulated kernels, scripts for the device.

Everything here runs in CI. The chunked CG emulation (``backends.chunked_cg``) does in NumPy
what the kernels do, chunk by chunk, with the host code the GPU runs; it is compared with the
NumPy reference backend. Tolerances: float64 results agree to 1e-10 relative to the largest
factor (summation order only, no float32 rounding to amplify); float32 to 2e-4 (a few ulps
per sum, grown by 3 CG steps, as in test_backends.py's CPU comparisons, which allow 2e-3;
the emulation uses NumPy's own sums, so it is ten times closer).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

import als.backends.cupy_cuda as cupy_cuda
from als.backends.base import CG_TOLERANCE
from als.backends.chunked_cg import EmulatedKernels, chunked_cg_solve
from als.backends.cuda_plan import (
    MAX_KERNEL_FACTORS,
    factor_layout,
    is_aligned,
    order_key,
    plan_chunks,
    topk_batch_rows,
    topk_segments,
    warp_geometry,
)
from als.backends.exact_gram import solve_exact
from als.backends.numpy_ref import NumpyBackend
from tests.conftest import power_law_matrix

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {np.float64: 1e-10, np.float32: 2e-4}


def awkward_matrix(n_users=120, n_items=900, seed=0):
    """Power-law confidences, some negative, with rows of 0, 1 and every item (900 entries)."""
    matrix = power_law_matrix(n_users, n_items, 5000, seed=seed, negative_fraction=0.1).tolil()
    matrix[0, :] = 0
    matrix[1, :] = 0
    matrix[1, 5] = 3.0
    matrix[2, :] = 2.0
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix.astype(np.float32)


def operands(Cui, factors, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((Cui.shape[0], factors)) * 0.1).astype(dtype)
    Y = (rng.standard_normal((Cui.shape[1], factors)) * 0.1).astype(dtype)
    return X, Y


def relative(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


# -- the plan -------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_entries", [1, 3, 256])
def test_chunks_cover_every_entry_once_in_row_order(chunk_entries):
    indptr = awkward_matrix().indptr
    chunk_row, begin, end = plan_chunks(np, indptr, chunk_entries)
    assert chunk_row.dtype == begin.dtype == end.dtype == np.int32
    assert np.all(end > begin) and np.all(end - begin <= chunk_entries)
    assert np.all(np.diff(chunk_row) >= 0)
    # consecutive chunks tile the entries: each starts where the last one ended
    assert begin[0] == 0 and end[-1] == indptr[-1] and np.array_equal(begin[1:], end[:-1])
    assert np.all(begin >= indptr[chunk_row]) and np.all(end <= indptr[chunk_row + 1])
    counts = np.bincount(chunk_row, minlength=len(indptr) - 1)
    assert np.array_equal(counts, -(-np.diff(indptr) // chunk_entries))  # empty rows: none


def test_plan_of_an_empty_matrix_has_no_chunks():
    chunk_row, begin, end = plan_chunks(np, np.zeros(5, dtype=np.int32))
    assert len(chunk_row) == len(begin) == len(end) == 0
    with pytest.raises(ValueError, match="chunk_entries"):
        plan_chunks(np, np.zeros(2, dtype=np.int32), 0)


def test_factor_layout_buckets():
    assert factor_layout(32, 4) == (1, True)
    assert factor_layout(128, 2) == (4, True)
    assert factor_layout(256, 4) == (8, True)
    assert factor_layout(128, 4, vector_types=False) == (4, False)
    assert factor_layout(128, 4, aligned=False) == (4, False)
    assert factor_layout(129, 4) == (8, False)
    assert factor_layout(MAX_KERNEL_FACTORS + 1, 4) is None
    for factors in range(1, MAX_KERNEL_FACTORS + 1, 7):
        per_lane, vector = factor_layout(factors, 4)
        assert 32 * per_lane >= factors > 16 * per_lane or per_lane == 1
        assert vector == (factors in (32, 64, 128, 256))
    with pytest.raises(ValueError, match="factors"):
        factor_layout(0, 4)


def test_alignment_check():
    assert is_aligned(256, 128, 4, 4)  # float4 loads at a 16-byte boundary
    assert not is_aligned(260, 128, 4, 4)
    assert is_aligned(260, 32, 1, 4)  # one float per lane: 4-byte words
    assert not is_aligned(0, 50, 4, 4)  # rows of 200 bytes are not all 16-byte aligned


@pytest.mark.parametrize("items", [0, 1, 8, 9, 100_001])
def test_warp_geometry_covers_every_item(items):
    (grid,), (block,) = warp_geometry(items)
    warps = block // 32
    assert block == 256 and grid >= 1
    assert grid * warps >= items > (grid - 1) * warps or items == 0


@pytest.mark.parametrize("n_items", [1, 5, 16_384, 40_000, 2**20 + 3, 3_000_000])
@pytest.mark.parametrize("k", [1, 10, 1000, 20_000])
def test_topk_segments_each_hold_k(n_items, k):
    if k > n_items:
        with pytest.raises(ValueError, match="k"):
            topk_segments(n_items, k)
        return
    segments, length = topk_segments(n_items, k)
    assert segments >= 1 and (segments - 1) * length < n_items <= segments * length
    assert n_items - (segments - 1) * length >= k  # the last, shortest segment too
    if n_items >= 4 * 16_384 and k <= 16_384:
        assert segments > 1  # long rows are shared among blocks


def test_topk_batches_fill_the_device_and_fit_memory():
    gib = 1 << 30
    rows = topk_batch_rows(100_000, 1_000_000, 10, 61, 4, 100 * gib, 132)
    assert rows >= 4 * 132
    assert rows * (1_000_000 * 4) <= 100 * gib / 4
    assert topk_batch_rows(100, 1_000_000, 10, 61, 4, 100 * gib, 132) == 100
    assert topk_batch_rows(100_000, 1_000_000, 10, 61, 4, 1 << 20, 132) == 1  # tiny memory


def test_order_key_ranks_like_numpys_sort():
    scores = np.array([1.5, -np.inf, np.nan, 0.0, -0.0, np.inf, -2.0, -np.nan, 3.0, 1e-45])
    for dtype in (np.float32, np.float64):
        keys = order_key(scores.astype(dtype))
        assert keys[3] == keys[4]  # 0.0 and -0.0 tie
        assert keys[2] == keys[7] == np.iinfo(keys.dtype).max  # NaN last, either sign
        order = np.argsort(keys, kind="stable")
        expected = np.lexsort([np.arange(len(scores)), -scores.astype(dtype)])  # NaN last
        assert np.array_equal(order, expected)


# -- the emulated chunked CG against the reference -------------------------------------------------


def reference_solve(Cui, X, Y, cg_steps, regularization=0.05):
    reference = NumpyBackend()
    expected = X.copy()
    reference.solve(Cui.astype(X.dtype), expected, Y, reference.gram(Y, regularization), cg_steps)
    return expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk_entries", [1, 3, 256])
@pytest.mark.parametrize("factors", [1, 7, 33])
def test_emulated_chunked_cg_matches_reference(dtype, chunk_entries, factors):
    Cui = awkward_matrix(seed=factors)
    X, Y = operands(Cui, factors, dtype, seed=factors)
    expected = reference_solve(Cui, X, Y, 3)
    got = X.copy()
    YtY = NumpyBackend().gram(Y, 0.05)
    chunked_cg_solve(np, EmulatedKernels(), Cui, got, Y, YtY, 3, CG_TOLERANCE, chunk_entries)
    assert relative(got, expected) <= TOLERANCE[dtype]
    assert (got[:1] == 0).all()  # the empty row


def test_emulated_cg_on_both_sides_with_long_rows():
    # the item side of the same matrix: a column of 120 users is one chunk of 256, so cut at 16
    Ciu = awkward_matrix().T.tocsr()
    X, Y = operands(Ciu, 16, np.float64, seed=4)
    expected = reference_solve(Ciu, X, Y, 3)
    got = X.copy()
    chunked_cg_solve(
        np, EmulatedKernels(), Ciu, got, Y, NumpyBackend().gram(Y, 0.05), 3, CG_TOLERANCE, 16
    )
    assert relative(got, expected) <= TOLERANCE[np.float64]


def test_emulated_cg_stops_rows_that_converge():
    # 3 factors in float64: CG is exact after 3 steps, the residual falls below 1e-20, and
    # a step past that would divide 0 by 0: every result is finite only if those rows stopped
    Cui = awkward_matrix()
    X, Y = operands(Cui, 3, np.float64, seed=1)
    got = X.copy()
    chunked_cg_solve(
        np, EmulatedKernels(), Cui, got, Y, NumpyBackend().gram(Y, 0.05), 50, CG_TOLERANCE
    )
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, reference_solve(Cui, X, Y, None), rtol=1e-8, atol=1e-12)


def test_emulated_cg_stops_a_row_with_a_nan_residual():
    # a NaN residual fails `rsold >= tolerance`: the row keeps its x and takes no step (the
    # reference's masked step multiplies NaN by 0 and so spreads the NaN over the row instead)
    Cui = awkward_matrix()
    X, Y = operands(Cui, 8, np.float64, seed=2)
    X[7, 3] = np.nan
    got = X.copy()
    YtY = NumpyBackend().gram(Y, 0.05)
    chunked_cg_solve(np, EmulatedKernels(), Cui, got, Y, YtY, 3, CG_TOLERANCE)
    np.testing.assert_array_equal(got[7], X[7])
    rows = np.arange(len(X)) != 7
    expected = reference_solve(Cui, X, Y, 3)
    assert relative(got[rows], expected[rows]) <= TOLERANCE[np.float64]


def test_emulated_cg_with_zero_steps_only_zeroes_empty_rows():
    Cui = awkward_matrix()
    X, Y = operands(Cui, 4, np.float64)
    got = X.copy()
    chunked_cg_solve(
        np, EmulatedKernels(), Cui, got, Y, NumpyBackend().gram(Y, 0.05), 0, CG_TOLERANCE
    )
    np.testing.assert_array_equal(got[1:], X[1:])
    assert (got[0] == 0).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_solve_from_chunk_grams_matches_reference(dtype):
    Cui = awkward_matrix()
    X, Y = operands(Cui, 9, dtype, seed=5)
    expected = reference_solve(Cui, X, Y, None)
    got = X.copy()
    # small chunks and blocks: rows cut in chunks and solved over several blocks
    solve_exact(np, scipy.sparse, Cui, got, Y, NumpyBackend().gram(Y, 0.05), 7, 20_000)
    assert relative(got, expected) <= {np.float64: 1e-10, np.float32: 1e-4}[dtype]
    assert (got[0] == 0).all()


def per_row_lambdas(Cui, dtype, seed=6):
    """Frequency-scaled lambdas, as ``SolverSettings.row_regularization`` makes them (nu=1)."""
    counts = np.diff(Cui.indptr).astype(np.float64)
    jitter = np.random.default_rng(seed).random(len(counts))  # rows of one count differ too
    return (0.002 * (counts + 0.5 * Cui.shape[1]) * (0.5 + jitter)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("chunk_entries", [3, 256])
def test_emulated_chunked_cg_with_per_row_lambda_matches_reference(dtype, chunk_entries):
    # the per-row lambda of the opt-in nu: the Gram matrix carries none, each row's system adds
    # its own
    Cui = awkward_matrix(seed=8)
    X, Y = operands(Cui, 12, dtype, seed=8)
    lambdas = per_row_lambdas(Cui, dtype)
    reference = NumpyBackend()
    YtY = reference.gram(Y, 0.0)
    expected = X.copy()
    reference.solve(Cui.astype(dtype), expected, Y, YtY, 3, lambdas)
    got = X.copy()
    chunked_cg_solve(
        np, EmulatedKernels(), Cui, got, Y, YtY, 3, CG_TOLERANCE, chunk_entries, lambdas
    )
    assert relative(got, expected) <= TOLERANCE[dtype]
    # and the lambdas mattered: the same solve without them lands elsewhere
    plain = X.copy()
    chunked_cg_solve(np, EmulatedKernels(), Cui, plain, Y, YtY, 3, CG_TOLERANCE, chunk_entries)
    assert relative(plain, expected) > 100 * TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_solve_from_chunk_grams_with_per_row_lambda_matches_reference(dtype):
    Cui = awkward_matrix(seed=9)
    X, Y = operands(Cui, 9, dtype, seed=9)
    lambdas = per_row_lambdas(Cui, dtype)
    reference = NumpyBackend()
    YtY = reference.gram(Y, 0.0)
    expected = X.copy()
    reference.solve(Cui.astype(dtype), expected, Y, YtY, None, lambdas)
    got = X.copy()
    # blocks of a few rows: each block must take its own rows' lambdas
    solve_exact(np, scipy.sparse, Cui, got, Y, YtY, 7, 20_000, row_regularization=lambdas)
    assert relative(got, expected) <= {np.float64: 1e-10, np.float32: 1e-4}[dtype]
    assert (got[0] == 0).all()


# -- other host-side pieces of the CUDA backend ----------------------------------------------------


def column_major_gemm(transa, transb, m, n, k, a, lda, b, ldb, ldc):
    """cuBLAS gemm on flat buffers read column-major: C = op(A) op(B), C is m x n."""
    A = a.reshape(-1, lda).T  # column-major lda x cols
    B = b.reshape(-1, ldb).T
    opA = A[:k, :m].T if transa == cupy_cuda.CUBLAS_OP_T else A[:m, :k]
    opB = B[:n, :k].T if transb == cupy_cuda.CUBLAS_OP_T else B[:k, :n]
    C = np.zeros((ldc, n))
    C[:m, :] = opA @ opB
    return C.T.ravel()  # back to the flat column-major buffer


def test_half_score_gemm_arguments_give_row_major_scores():
    rng = np.random.default_rng(0)
    queries, items = rng.standard_normal((5, 3)), rng.standard_normal((7, 3))
    transa, transb, m, n, k, lda, ldb, ldc = cupy_cuda.half_scores_gemm_arguments(5, 7, 3)
    # cuBLAS gets the items buffer as A and the queries buffer as B
    flat = column_major_gemm(transa, transb, m, n, k, items.ravel(), lda, queries.ravel(), ldb, ldc)
    np.testing.assert_allclose(flat.reshape(5, 7), queries @ items.T, rtol=1e-12)


def test_allocation_failures_of_every_cuda_library_count_as_out_of_memory():
    class OutOfMemoryError(Exception):
        pass

    class CUBLASError(RuntimeError):
        pass

    assert cupy_cuda.is_out_of_memory(OutOfMemoryError("x"), OutOfMemoryError)
    assert cupy_cuda.is_out_of_memory(CUBLASError("CUBLAS_STATUS_ALLOC_FAILED"))
    assert cupy_cuda.is_out_of_memory(RuntimeError("CUSPARSE_STATUS_ALLOC_FAILED"))
    assert cupy_cuda.is_out_of_memory(RuntimeError("cudaErrorMemoryAllocation: out of memory"))
    assert not cupy_cuda.is_out_of_memory(CUBLASError("CUBLAS_STATUS_INVALID_VALUE"))
    assert not cupy_cuda.is_out_of_memory(ValueError("shapes"), OutOfMemoryError)


# -- the device script -----------------------------------------------------------------------------


def test_gpu_check_script_parses_and_its_dry_run_plans_every_stage(tmp_path):
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    env = {"OUT": str(tmp_path), "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["bash", str(script), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cover every cg_* instance" in result.stdout
    assert "emulated chunked CG matches the reference" in result.stdout
    assert "== budgets:" in result.stdout and "of 360" in result.stdout
    report = (tmp_path / "gpu_bench.json").read_text()
    assert '"kind": "matrix"' in report and '"most_popular_item"' in report
