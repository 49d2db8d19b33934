"""Input checking in one place: every public entry point normalises its arguments here.

The kernels behind the backends trust what they are given (Numba does not bounds check),
so anything a user passes is checked and put in canonical form before it reaches them.
"""

from __future__ import annotations

import numbers
import time
import warnings

import numpy as np
import scipy.sparse

__all__ = [
    "ParameterWarning",
    "as_scalar",
    "is_scalar",
    "all_finite",
    "check_user_items",
    "check_ids",
    "check_positive_int",
    "check_factor_array",
    "check_growth",
]

#: elements checked at a time by ``all_finite``: its scratch memory stays at 1 MiB
_FINITE_CHUNK = 1 << 20


def is_scalar(value):
    """True for one value: a Python or NumPy scalar or a 0-d array (which NumPy treats alike)."""
    return np.ndim(value) == 0


def as_scalar(value):
    """A 0-d array or NumPy scalar as the Python value it holds; anything else unchanged."""
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        return value.item()
    return value


def all_finite(array):
    """True when every value of ``array`` is finite, checked in chunks (little scratch memory)."""
    flat = np.asarray(array).reshape(-1)
    if flat.dtype.kind not in "fc":
        return True
    return all(
        np.isfinite(flat[start : start + _FINITE_CHUNK]).all()
        for start in range(0, flat.size, _FINITE_CHUNK)
    )


class ParameterWarning(UserWarning):
    """Warns that an argument was accepted but converted (as implicit's ParameterWarning)."""


def check_user_items(
    matrix, name="user_items", shape=None, rows=None, columns=None, require_entries=False
):
    """Return ``matrix`` as a canonical float32 CSR matrix, or raise naming the problem.

    Canonical means: CSR, float32 weights, sorted column indices, no duplicate entries
    (duplicates are summed, with a warning), every index in range, every weight finite.
    The caller's matrix is never modified.

    Parameters
    ----------
    matrix : scipy.sparse matrix or 2-D ndarray
        Rows are users (or items), columns items (or users), values weights.
    name : str
        The argument name used in error messages.
    shape : tuple of int, optional
        The exact shape required.
    rows, columns : int, optional
        The number of rows or columns required, when only one of them is fixed.
    require_entries : bool
        Refuse a matrix without rows, columns or stored entries (nothing to learn from).

    Raises
    ------
    TypeError
        For something that is not a matrix, or weights that are not real numbers.
    ValueError
        For a wrong shape, NaN or infinite weights, or a malformed CSR structure.
    """
    if scipy.sparse.issparse(matrix):
        if matrix.format != "csr":
            start = time.perf_counter()
            converted = matrix.tocsr()
            warnings.warn(
                f"{name} should be a CSR matrix, got {matrix.format.upper()}; converting it "
                f"took {time.perf_counter() - start:.3f}s",
                ParameterWarning,
                stacklevel=3,
            )
            matrix = converted
    elif isinstance(matrix, np.ndarray) and matrix.ndim == 2:
        _check_weight_dtype(matrix.dtype, name)
        warnings.warn(
            f"{name} should be a sparse CSR matrix, got a dense array; converting it",
            ParameterWarning,
            stacklevel=3,
        )
        matrix = scipy.sparse.csr_matrix(matrix)
    else:
        raise TypeError(
            f"{name} must be a scipy.sparse CSR matrix of weights, not {type(matrix).__name__}"
        )
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {matrix.shape}")
    _check_weight_dtype(matrix.dtype, name)
    if shape is not None and matrix.shape != tuple(shape):
        raise ValueError(f"{name} has shape {matrix.shape}, expected {tuple(shape)}")
    if rows is not None and matrix.shape[0] != rows:
        raise ValueError(f"{name} has {matrix.shape[0]} rows, expected {rows}")
    if columns is not None and matrix.shape[1] != columns:
        raise ValueError(f"{name} has {matrix.shape[1]} columns, expected {columns}")

    if require_entries and 0 in matrix.shape:
        raise ValueError(f"{name} is empty: shape {matrix.shape}")
    if require_entries and matrix.nnz == 0:
        raise ValueError(f"{name} has no interactions: every weight is missing")

    try:
        matrix.check_format(full_check=True)
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid CSR matrix: {exc}") from exc

    data = np.asarray(matrix.data)
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = np.flatnonzero(~np.isfinite(data))
        row = int(np.searchsorted(matrix.indptr, bad[0], side="right") - 1)
        raise ValueError(
            f"{name} has {len(bad)} NaN or infinite weight(s), the first at "
            f"row {row}, column {int(matrix.indices[bad[0]])}"
        )
    with np.errstate(over="ignore"):  # overflow to inf is reported below, by name
        weights = data.astype(np.float32)
    matrix = scipy.sparse.csr_matrix(
        (weights, matrix.indices.copy(), matrix.indptr.copy()),
        shape=matrix.shape,
    )
    if not matrix.has_canonical_format:
        nnz = matrix.nnz
        matrix.sum_duplicates()
        if matrix.nnz != nnz:
            warnings.warn(
                f"{name} has {nnz - matrix.nnz} duplicate (row, column) entries; their "
                "weights were summed",
                ParameterWarning,
                stacklevel=3,
            )
    data = matrix.data
    if not np.isfinite(data).all():
        raise ValueError(f"{name} has weights that overflow float32")
    return matrix


def _check_weight_dtype(dtype, name):
    real = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if not (real or dtype == np.bool_):
        raise TypeError(f"{name} must hold real-valued weights, not {dtype}")


def check_ids(ids, name, upper, allow_scalar=True):
    """Return ``ids`` as an int64 array (or a Python int for a scalar) in ``[0, upper)``.

    Raises
    ------
    TypeError
        For ids that are not integers.
    ValueError
        For an empty array, a multi-dimensional array, or ids out of range.
    """
    if allow_scalar and is_scalar(ids):
        ids = as_scalar(ids)
        if not isinstance(ids, numbers.Integral) or isinstance(ids, bool):
            raise TypeError(f"{name} must be an integer id, not {type(ids).__name__}")
        if not 0 <= ids < upper:
            raise ValueError(f"{name}={ids} is out of range: the model has ids 0..{upper - 1}")
        return int(ids)
    array = np.asarray(ids)
    if array.ndim == 0:  # one id where a list is expected: a list of one
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, not {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= upper):
        bad = array[(array < 0) | (array >= upper)][0]
        raise ValueError(f"{name} holds id {bad}, out of range: the model has ids 0..{upper - 1}")
    return array


def check_positive_int(value, name, minimum=1):
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    value = as_scalar(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_factor_array(array, name, dtype, shape=None):
    """Return ``array`` as a C-contiguous 2-D array of ``dtype`` with finite values."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}, expected {tuple(shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must hold floating-point factors, not {array.dtype}")
    if not all_finite(array):
        raise ValueError(f"{name} has NaN or infinite values")
    return np.ascontiguousarray(array, dtype=dtype)


#: a partial fit may add at most this many rows beyond the rows it is given, or as many as the
#: model has, whichever is more (ids need not be contiguous, but never absurdly sparse)
GROWTH_SLACK = 1 << 16


def check_growth(ids, current, name, side):
    """Refuse ids that would grow a model's ``current`` rows to an absurd size.

    The rule: after a partial fit with ``len(ids)`` rows, the model has at most
    ``current + len(ids) + max(current, GROWTH_SLACK)`` rows, i.e. the new rows' ids may
    leave a gap no larger than the model itself (or 65,536 rows). A model can still grow
    without bound, by calls that each at most double it.
    """
    if not len(ids):
        return
    needed = int(ids.max()) + 1
    limit = current + len(ids) + max(current, GROWTH_SLACK)
    if needed > limit:
        raise ValueError(
            f"{name} holds id {needed - 1:,}: storing it would grow the model from {current:,} "
            f"to {needed:,} {side} for {len(ids):,} given row(s); one partial fit may grow it "
            f"to at most {limit:,} (current + given + max(current, {GROWTH_SLACK:,}))"
        )
