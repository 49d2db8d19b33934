"""Input checking in one place: every public entry point normalises its arguments here.

The kernels behind the backends trust what they are given (Numba does not bounds check),
so anything a user passes is checked and put in canonical form before it reaches them.
One function per kind of input: ``check_user_items`` (every sparse matrix of weights, with
the options its callers need), ``check_ids``, ``check_positive_int``, ``check_finite_real``,
``check_random_state``, ``check_dtype``, ``check_choice`` and ``check_factor_array``.

Message style: ``"<argument> must be <what it must be>, got <what it was>"`` (or ``not
<type>`` for a wrong type), naming the argument as the caller spelled it. Errors are
``InvalidValueError`` / ``InvalidTypeError`` (``als.errors``): a ``ValueError`` /
``TypeError`` that is also a ``UserError``, so the command lines report them as mistakes.
"""

from __future__ import annotations

import numbers
import time
import warnings

import numpy as np
import scipy.sparse

from .errors import IdOutOfRangeError, InvalidTypeError, InvalidValueError, ParameterWarning

__all__ = [
    "ParameterWarning",
    "all_finite",
    "as_scalar",
    "check_choice",
    "check_dtype",
    "check_factor_array",
    "check_finite_real",
    "check_growth",
    "check_ids",
    "check_positive_int",
    "check_random_state",
    "check_user_items",
    "is_scalar",
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


def check_user_items(
    matrix,
    name="user_items",
    shape=None,
    rows=None,
    columns=None,
    require_entries=False,
    *,
    dtype=np.float32,
    allow_dense=True,
    warn=True,
    finite=True,
    drop_zeros=False,
    widen=False,
):
    """Return ``matrix`` as a canonical CSR matrix of weights, or raise naming the problem.

    Canonical means: CSR, ``dtype`` weights, sorted column indices, no duplicate entries
    (duplicates are summed), every index in range and, with ``finite``, every weight finite.
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
    dtype : numpy dtype or None
        The weights' dtype (float32, as the kernels read them); None keeps the input's.
    allow_dense : bool
        Accept a 2-D ndarray (converted, with a warning when ``warn``).
    warn : bool
        Warn (``ParameterWarning``) when the input had to be converted from another format
        or had duplicate entries; a split or a data set converts silently.
    finite : bool
        Refuse NaN and infinite weights (a split keeps them, as implicit does).
    drop_zeros : bool
        Drop stored zeros too.
    widen : bool
        Accept a matrix with fewer than ``columns`` columns and widen it with empty columns
        (as implicit does: the missing columns are users or items without interactions, for
        example ones the model gained after the matrix was built). A wider one is refused.

    Raises
    ------
    TypeError
        For something that is not a matrix, or weights that are not real numbers.
    ValueError
        For a wrong shape, NaN or infinite weights, or a malformed CSR structure.
    """
    matrix = _as_sparse(matrix, name, allow_dense, warn)
    _check_matrix_shape(matrix, name, shape, rows, columns, require_entries, widen)
    try:
        matrix.check_format(full_check=True)
    except ValueError as exc:
        raise InvalidValueError(f"{name} is not a valid CSR matrix: {exc}") from exc

    data = np.asarray(matrix.data)
    if finite and np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        bad = np.flatnonzero(~np.isfinite(data))
        row = int(np.searchsorted(matrix.indptr, bad[0], side="right") - 1)
        raise InvalidValueError(
            f"{name} has {len(bad)} NaN or infinite weight(s), the first at "
            f"row {row}, column {int(matrix.indices[bad[0]])}"
        )
    with np.errstate(over="ignore"):  # overflow to inf is reported below, by name
        weights = data.astype(data.dtype if dtype is None else dtype)
    matrix = scipy.sparse.csr_matrix(
        (weights, matrix.indices.copy(), matrix.indptr.copy()),
        shape=(matrix.shape[0], columns if widen and columns is not None else matrix.shape[1]),
    )
    if not matrix.has_canonical_format:
        nnz = matrix.nnz
        matrix.sum_duplicates()
        if warn and matrix.nnz != nnz:
            warnings.warn(
                f"{name} has {nnz - matrix.nnz} duplicate (row, column) entries; their "
                "weights were summed",
                ParameterWarning,
                stacklevel=3,
            )
    if drop_zeros:
        matrix.eliminate_zeros()
    if finite and not np.isfinite(matrix.data).all():
        raise InvalidValueError(f"{name} has weights that overflow {matrix.dtype}")
    return matrix


def _as_sparse(matrix, name, allow_dense, warn):
    """``matrix`` as a scipy.sparse CSR matrix, converted (with a warning when ``warn``) from
    another sparse format or, when ``allow_dense``, a 2-D ndarray.

    Its warnings name the same line as :func:`check_user_items`'s own (the caller of the
    public function that checks its argument): one frame further up, so ``stacklevel=4``.
    """
    if scipy.sparse.issparse(matrix):
        if matrix.format != "csr":
            start = time.perf_counter()
            converted = matrix.tocsr()
            if warn:
                warnings.warn(
                    f"{name} should be a CSR matrix, got {matrix.format.upper()}; converting "
                    f"it took {time.perf_counter() - start:.3f}s",
                    ParameterWarning,
                    stacklevel=4,
                )
            matrix = converted
    elif allow_dense and isinstance(matrix, np.ndarray) and matrix.ndim == 2:
        _check_weight_dtype(matrix.dtype, name)
        if warn:
            warnings.warn(
                f"{name} should be a sparse CSR matrix, got a dense array; converting it",
                ParameterWarning,
                stacklevel=4,
            )
        matrix = scipy.sparse.csr_matrix(matrix)
    else:
        kind = "CSR matrix of weights" if allow_dense else "matrix"
        raise InvalidTypeError(f"{name} must be a scipy.sparse {kind}, not {type(matrix).__name__}")
    return matrix


def _check_matrix_shape(matrix, name, shape, rows, columns, require_entries, widen):
    """Refuse a matrix that is not 2-D, has the wrong weight dtype or shape, or (with
    ``require_entries``) nothing to learn from."""
    if matrix.ndim != 2:
        raise InvalidValueError(f"{name} must be 2-dimensional, got shape {matrix.shape}")
    _check_weight_dtype(matrix.dtype, name)
    if shape is not None and matrix.shape != tuple(shape):
        raise InvalidValueError(f"{name} has shape {matrix.shape}, expected {tuple(shape)}")
    if rows is not None and matrix.shape[0] != rows:
        raise InvalidValueError(f"{name} has {matrix.shape[0]} rows, expected {rows}")
    if widen and columns is not None and matrix.shape[1] > columns:
        raise InvalidValueError(
            f"{name} has {matrix.shape[1]} columns but the model has only {columns}: a matrix "
            "may be narrower than the model (missing columns have no interactions), not wider"
        )
    if columns is not None and matrix.shape[1] != columns and not widen:
        raise InvalidValueError(f"{name} has {matrix.shape[1]} columns, expected {columns}")

    if require_entries and 0 in matrix.shape:
        raise InvalidValueError(f"{name} is empty: shape {matrix.shape}")
    if require_entries and matrix.nnz == 0:
        raise InvalidValueError(f"{name} has no interactions: every weight is missing")


def _check_weight_dtype(dtype, name):
    real = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if not (real or dtype == np.bool_):
        raise InvalidTypeError(f"{name} must hold real-valued weights, not {dtype}")


def check_ids(ids, name, upper, allow_scalar=True):
    """Return ``ids`` as an int64 array (or a Python int for a scalar) in ``[0, upper)``.

    Raises
    ------
    TypeError
        For ids that are not integers.
    ValueError
        For a multi-dimensional array.
    IdOutOfRangeError
        (a ValueError and an IndexError) for ids out of range.
    """
    if allow_scalar and is_scalar(ids):
        ids = as_scalar(ids)
        if not isinstance(ids, numbers.Integral) or isinstance(ids, bool):
            raise InvalidTypeError(f"{name} must be an integer id, not {type(ids).__name__}")
        if not 0 <= ids < upper:
            raise IdOutOfRangeError(
                f"{name}={ids} is out of range: the model has ids 0..{upper - 1}"
            )
        return int(ids)
    array = np.asarray(ids)
    if array.ndim == 0:  # one id where a list is expected: a list of one
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidValueError(f"{name} must be a 1-D array of ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InvalidTypeError(f"{name} must hold integer ids, not {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= upper):
        bad = array[(array < 0) | (array >= upper)][0]
        raise IdOutOfRangeError(
            f"{name} holds id {bad}, out of range: the model has ids 0..{upper - 1}"
        )
    return array


def check_positive_int(value, name, minimum=1):
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    value = as_scalar(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise InvalidValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_factor_array(array, name, dtype, shape=None):
    """Return ``array`` as a C-contiguous 2-D array of ``dtype`` with finite values."""
    array = np.asarray(array)
    if array.ndim != 2:
        raise InvalidValueError(f"{name} must be a 2-D array, got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise InvalidValueError(f"{name} has shape {array.shape}, expected {tuple(shape)}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidTypeError(f"{name} must hold floating-point factors, not {array.dtype}")
    if not all_finite(array):
        raise InvalidValueError(f"{name} has NaN or infinite values")
    return np.ascontiguousarray(array, dtype=dtype)


def check_finite_real(
    value, name, minimum=None, exclusive_minimum=None, maximum=None, exclusive_maximum=None
):
    """Return ``value`` as a float, or raise if it is not a finite real number in range.

    Bools are refused (``True`` is not a regularisation). ``minimum``/``maximum`` are
    inclusive bounds, ``exclusive_minimum``/``exclusive_maximum`` exclusive ones.
    """
    value = as_scalar(value)
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be a real number, not {type(value).__name__}")
    if not np.isfinite(value):
        raise InvalidValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidValueError(f"{name} must be >= {minimum}, got {value}")
    if exclusive_minimum is not None and value <= exclusive_minimum:
        raise InvalidValueError(f"{name} must be > {exclusive_minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidValueError(f"{name} must be <= {maximum}, got {value}")
    if exclusive_maximum is not None and value >= exclusive_maximum:
        raise InvalidValueError(f"{name} must be < {exclusive_maximum}, got {value}")
    return float(value)


def check_random_state(random_state):
    """Return one ``numpy.random.Generator`` for ``random_state``, as implicit seeds one.

    ``None``, an integer or a ``SeedSequence`` seed a new generator (the one implicit builds
    from the same seed); a ``Generator`` is used as is; a legacy ``RandomState`` seeds a new
    generator from one draw (implicit 0.7 intends this but crashes on it). A bool is refused.
    """
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, bool) or not (
        random_state is None
        or isinstance(random_state, (numbers.Integral, np.random.Generator, np.random.SeedSequence))
    ):
        raise InvalidTypeError(
            "random_state must be None, an int, a numpy Generator, SeedSequence or "
            f"RandomState, not {type(random_state).__name__}"
        )
    try:
        return np.random.default_rng(random_state)
    except ValueError as exc:
        raise InvalidValueError(
            f"random_state={random_state!r} is not a valid seed: {exc}"
        ) from exc


def check_dtype(dtype, name="dtype"):
    """Return ``dtype`` as a ``numpy.dtype``, or raise if NumPy does not know it."""
    try:
        return np.dtype(dtype)
    except TypeError as exc:
        raise InvalidTypeError(f"{name}={dtype!r} is not a NumPy dtype") from exc


def check_choice(value, choices, name):
    """Return ``value`` if it is one of ``choices``, else raise listing them."""
    if value not in choices:
        raise InvalidValueError(
            f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}"
        )
    return value


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
        raise InvalidValueError(
            f"{name} holds id {needed - 1:,}: storing it would grow the model from {current:,} "
            f"to {needed:,} {side} for {len(ids):,} given row(s); one partial fit may grow it "
            f"to at most {limit:,} (current + given + max(current, {GROWTH_SLACK:,}))"
        )
