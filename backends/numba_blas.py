"""BLAS called straight from Numba kernels: row-major ``gemm`` and ``gemv`` into given output.

Numba's own ``np.dot`` costs seconds of compile time per specialisation (its shape checks
format error messages) and allocates unless given ``out``. These helpers call SciPy's BLAS
(``scipy.linalg.cython_blas``, the library ``backends.numba_cpu`` limits with threadpoolctl)
through its exported function pointers, float32 (``sgemm``/``sgemv``) or float64
(``dgemm``/``dgemv``) by the output's item size, and write into arrays the caller owns.

Arrays are row-major with contiguous rows (a row stride of their own is allowed, so row
and column slices of a C-contiguous matrix work); BLAS is column-major, so ``C = A B`` runs
as ``C^T = B^T A^T`` on the same memory. The helpers trust their operands: the caller
passes matching shapes and the one dtype.
"""

from __future__ import annotations

import llvmlite.binding
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

__all__ = ["gemm", "gemv"]


def _blas(name, arguments):
    """SciPy's BLAS function ``name`` as a Numba external function of ``arguments`` pointers.

    The kernels call it by a symbol name registered here in every process, not by an
    address baked into the code, so that Numba can cache them.
    """
    symbol = f"als_numba_blas_{name}"
    address = get_cython_function_address("scipy.linalg.cython_blas", name)
    llvmlite.binding.add_symbol(symbol, address)
    # every argument of Fortran BLAS is passed by address: the kernels pass the addresses
    # as integers (``ctypes.data``), which costs less to compile than pointer objects
    return types.ExternalFunction(symbol, types.void(*([types.intp] * arguments)))


_sgemm_blas = _blas("sgemm", 13)
_dgemm_blas = _blas("dgemm", 13)
_sgemv_blas = _blas("sgemv", 11)
_dgemv_blas = _blas("dgemv", 11)

_NO, _YES = ord("N"), ord("T")


@njit(inline="always")
def _row_stride(A):
    """The leading dimension of a row-major A (its row stride in elements, at least 1)."""
    if A.shape[0] > 1:
        return max(1, A.strides[0] // A.itemsize)
    return max(1, A.shape[A.ndim - 1])


@njit(inline="always")
def gemm(transpose_a, transpose_b, alpha, A, B, beta, C):
    """C = alpha op(A) op(B) + beta C, op(M) = M^T where ``transpose_*`` says so.

    A, B and C are 2-d with contiguous rows; C is m x n, op(A) m x k and op(B) k x n.
    The flags and scalars are passed on as plain bools and floats: constants would make
    each call site a specialisation of its own, compiled separately.
    """
    _gemm(bool(transpose_a), bool(transpose_b), float(alpha), A, B, float(beta), C)


@njit(inline="always")
def gemv(transpose, alpha, A, x, beta, y):
    """y = alpha op(A) x + beta y, op(A) = A^T where ``transpose`` says so.

    A is 2-d with contiguous rows; x and y are contiguous vectors.
    """
    _gemv(bool(transpose), float(alpha), A, x, float(beta), y)


@njit(nogil=True)
def _gemm(transpose_a, transpose_b, alpha, A, B, beta, C):
    m, n = C.shape
    k = A.shape[0] if transpose_a else A.shape[1]
    if m == 0 or n == 0:
        return
    # column-major: C^T = op(B)^T op(A)^T, the flags pass through with the operands swapped;
    # the flags ride in the int32 array (a Fortran character is the first byte of its word)
    sizes = np.empty(8, np.int32)
    sizes[0] = _YES if transpose_b else _NO
    sizes[1] = _YES if transpose_a else _NO
    sizes[2], sizes[3], sizes[4] = n, m, k
    sizes[5], sizes[6], sizes[7] = _row_stride(B), _row_stride(A), _row_stride(C)
    scalars = np.empty(2, C.dtype)
    scalars[0], scalars[1] = alpha, beta
    size, scalar = sizes.ctypes.data, scalars.ctypes.data
    arguments = (
        size, size + 4, size + 8, size + 12, size + 16, scalar, B.ctypes.data, size + 20,
        A.ctypes.data, size + 24, scalar + C.itemsize, C.ctypes.data, size + 28,
    )  # fmt: skip
    if C.itemsize == 4:
        _sgemm_blas(*arguments)
    else:
        _dgemm_blas(*arguments)


@njit(nogil=True)
def _gemv(transpose, alpha, A, x, beta, y):
    rows, columns = A.shape
    if y.shape[0] == 0:
        return
    if (columns if not transpose else rows) == 0:
        # BLAS would leave y untouched for an empty sum
        for i in range(y.shape[0]):
            y[i] = beta * y[i] if beta != 0 else 0
        return
    # column-major, A is its transpose: A x is A^T-of-that, so the flag flips
    sizes = np.empty(5, np.int32)
    sizes[0] = _NO if transpose else _YES
    sizes[1], sizes[2], sizes[3], sizes[4] = columns, rows, _row_stride(A), 1
    scalars = np.empty(2, y.dtype)
    scalars[0], scalars[1] = alpha, beta
    size, scalar = sizes.ctypes.data, scalars.ctypes.data
    arguments = (
        size, size + 4, size + 8, scalar, A.ctypes.data, size + 12, x.ctypes.data, size + 16,
        scalar + y.itemsize, y.ctypes.data, size + 16,
    )  # fmt: skip
    if y.itemsize == 4:
        _sgemv_blas(*arguments)
    else:
        _dgemv_blas(*arguments)
