"""``backends.numba_blas``: SciPy's BLAS called from Numba against NumPy's products."""

from __future__ import annotations

import numpy as np
import pytest

from als.backends.numba_blas import gemm, gemv

# float32 sums of at most 9 products of standard normals: rounding is ~1e-6 relative to the
# terms' size; float64 ~1e-15. The tolerances leave a factor of ~10 for BLAS's order of sums.
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_gemm_matches_numpy(dtype, transpose_a, transpose_b):
    rng = np.random.default_rng(0)
    m, n, k = 5, 3, 9  # non-square everywhere, so a swapped dimension shows
    A = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    C = rng.standard_normal((m, n)).astype(dtype)
    expected = 0.5 * (A.T if transpose_a else A) @ (B.T if transpose_b else B) + 2.0 * C
    gemm(transpose_a, transpose_b, 0.5, A, B, 2.0, C)
    np.testing.assert_allclose(C, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_reads_and_writes_row_slices_in_place(dtype):
    # operands that are blocks of larger matrices: their row stride is not their width
    rng = np.random.default_rng(1)
    big_a, big_b = rng.standard_normal((8, 12)).astype(dtype), rng.standard_normal((9, 7))
    big_b = big_b.astype(dtype)
    out = np.full((6, 10), 7.0, dtype)
    A, B, C = big_a[1:5, 2:9], big_b[2:9, 1:4], out[1:5, 3:6]
    expected_block = A @ B
    gemm(False, False, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, expected_block, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])
    # nothing outside the output block was touched
    untouched = np.ones(out.shape, bool)
    untouched[1:5, 3:6] = False
    assert np.all(out[untouched] == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transpose", [False, True])
def test_gemv_matches_numpy(dtype, transpose):
    rng = np.random.default_rng(2)
    big = rng.standard_normal((7, 11)).astype(dtype)
    A = big[1:6, 2:10]  # 5 x 8, rows strided by 11
    x = rng.standard_normal(5 if transpose else 8).astype(dtype)
    y = rng.standard_normal(8 if transpose else 5).astype(dtype)
    expected = -1.0 * (A.T if transpose else A) @ x + 1.0 * y
    gemv(transpose, -1.0, A, x, 1.0, y)
    np.testing.assert_allclose(y, expected, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_single_row_operands():
    # one row: the leading dimension comes from the width, not the (meaningless) row stride
    rng = np.random.default_rng(3)
    A, B = rng.standard_normal((1, 4)), rng.standard_normal((4, 6))
    C = np.empty((1, 6))
    gemm(False, False, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, A @ B, rtol=1e-12)
    y = np.empty(1)
    gemv(False, 1.0, A, B[:, 0].copy(), 0.0, y)
    np.testing.assert_allclose(y, A @ B[:, 0], rtol=1e-12)
