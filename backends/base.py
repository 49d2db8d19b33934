"""The interface every compute backend implements, and lookup of a backend by name.

A backend owns where arrays live (host memory, GPU memory) and the numerical kernels that
touch them. The model (``als.model``) and the fit core (``als.fitting``) own everything else:
validation, defaults, the fit loop, the loss's normalisation. They call only the methods
below, so they never need to know which backend they hold.

The contract every implementation shares lives here too: the CG stopping threshold, the size
of the row blocks work arrays are cut into, and the operand check a kernel-backed ``solve``
relies on. Implementations: ``numpy_ref`` (the oracle), ``numba_cpu``, ``cupy_cuda``; the
array code the NumPy and CuPy backends share is ``xp_generic.ArrayModuleBackend``.

Arrays a backend hands out are "device arrays": ``numpy.ndarray`` for the CPU backends,
``cupy.ndarray`` on the GPU. Sparse matrices are CSR in the backend's own sparse type.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "INT32_MAX",
    "as_int32",
    "check_int32_ids",
    "Backend",
    "BackendUnavailable",
    "BACKENDS",
    "BLOCK_ELEMENTS",
    "CG_TOLERANCE",
    "LossParts",
    "available_backends",
    "check_solve_operands",
    "get_backend",
]

#: a row's conjugate-gradient iteration stops once its squared residual is below this
CG_TOLERANCE = 1e-20

#: work arrays are split into blocks of rows holding at most this many elements
BLOCK_ELEMENTS = 1 << 24


class BackendUnavailable(RuntimeError):
    """Raised when a backend was asked for but cannot run here (package or device missing)."""


class CudaOutOfMemoryError(MemoryError):
    """The GPU ran out of memory; the message gives the sizes involved and what to change."""


class LossParts(NamedTuple):
    """The unregularised training loss of some rows, as sums, before normalisation.

    With ``s = x_u . y_i``, confidence ``c = |Cui[u, i]|`` and preference ``p = [Cui > 0]``
    (implicit's loss, which adds ``c`` rather than ``c p^2`` for every stored entry):

    - ``observed``: the stored entries, ``sum c (1 + s^2 - 2 p s)``;
    - ``unobserved``: the missing cells, ``sum s^2``, computed through the Gramian as
      ``sum_u x_u^T (Y^T Y) x_u`` minus the stored entries' ``s^2``;
    - ``confidence``: ``sum c`` over the stored entries;
    - ``missing``: the number of missing cells, ``rows * columns - nnz``.

    Parts of disjoint blocks of rows add up field by field; ``als.fitting.training_loss``
    adds the regularisation and normalises, in one place.
    """

    observed: float
    unobserved: float
    confidence: float
    missing: int


@runtime_checkable
class Backend(Protocol):
    """What the model needs from a compute backend.

    Conventions shared by every method:

    - ``Cui`` is a CSR matrix of signed confidences (already multiplied by ``alpha``): a
      positive entry means preference 1 with that confidence, a negative entry preference 0
      with confidence ``|c|``. Its indices are canonical and in range: the model checked them.
    - ``X`` are the factors being solved for (one row per row of ``Cui``), ``Y`` the fixed
      factors of the other side (one row per column of ``Cui``).
    """

    name: str
    #: factor dtypes this backend can train and score with
    dtypes: tuple[np.dtype, ...]

    def to_device(self, array_or_csr: Any) -> Any:
        """Copy a host ``ndarray`` or ``scipy.sparse.csr_matrix`` into backend memory."""

    def to_host(self, array: Any) -> np.ndarray:
        """Return a NumPy view or copy of a device array."""

    def gram(self, Y: Any, regularization: float) -> Any:
        """Return ``Y^T Y + regularization * I`` as a device array in ``Y``'s dtype."""

    def solve(
        self,
        Cui: Any,
        X: Any,
        Y: Any,
        YtY: Any,
        cg_steps: int | None,
        row_regularization: Any = None,
    ) -> None:
        """Update every row of ``X`` in place given ``Y`` and ``YtY = gram(Y, lambda)``.

        ``cg_steps`` conjugate-gradient steps warm-started from the current ``X``, or the
        exact solution (Cholesky) when ``cg_steps`` is None. Rows of ``Cui`` with no entries
        become zero. ``row_regularization``, a device vector with one value per row of ``X``
        in its dtype, adds ``row_regularization[u] * I`` to row ``u``'s system on top of
        ``YtY`` (per-row lambda; ``gram(Y, 0)`` then carries none).
        """

    def solve_subspace(
        self,
        Cui: Any,
        X: Any,
        Y: Any,
        YtY: Any,
        block_size: int,
        sweeps: int = 1,
        row_regularization: Any = None,
    ) -> None:
        """Update every row of ``X`` in place by iALS++ (Rendle et al. 2021).

        ``sweeps`` sweeps of block coordinate descent over the factor dimensions, ``block_size``
        at a time: each block is solved exactly with the others fixed, reading the sparse
        data once. ``block_size >= factors`` is one exact solve per sweep. Rows of ``Cui``
        with no entries become zero. ``row_regularization`` is as in ``solve``.
        """

    def loss_parts(self, Cui: Any, X: Any, Y: Any) -> LossParts:
        """Return the unregularised loss of the rows of ``X``, as its parts (float64 sums)."""

    def squared_norm(self, array: Any, row_weights: Any = None) -> float:
        """Return the sum of the squares of a device array's values, in float64.

        With ``row_weights`` (a device vector, one per row), each row's sum of squares is
        weighed by its weight first.
        """

    def all_finite(self, array: Any) -> bool:
        """Return True when every value of a device array is finite."""

    def norms(self, factors: Any) -> Any:
        """Return the row norms of ``factors``; zero norms are replaced by 1e-10."""

    def topk(
        self,
        queries: Any,
        factors: Any,
        k: int,
        exclude: Any = None,
        exclude_all: Any = None,
        norms: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``k`` best ``factors`` rows for every query row, as host arrays.

        Scores are ``queries @ factors.T`` (divided by ``norms`` when given). ``exclude`` is
        a CSR matrix, one row per query, of ids that query may not return; ``exclude_all``
        an array of ids no query may return. Results are ordered by score (descending),
        ties by id (ascending). Excluded ids never appear: a row with fewer than ``k``
        candidates is padded with id -1 and score -inf. ``k`` is at most ``len(factors)``.
        """

    def threads(self) -> AbstractContextManager[None]:
        """Context manager that applies this backend's thread limits and restores them."""


#: the largest index the kernels (int32 indices) and top-k results (int32 ids) can hold
INT32_MAX = int(np.iinfo(np.int32).max)


def as_int32(array, name, bound=None):
    """``array`` (NumPy or CuPy) as int32, refusing values int32 cannot hold.

    A cast would wrap them around silently, and kernels do not bounds check. ``bound`` is an
    exclusive upper bound the non-negative values are known to respect (the dimension they
    index, checked by the model): when it fits, no pass over the values is needed.
    """
    if array.dtype == np.int32:
        return array
    if bound is not None and bound <= INT32_MAX + 1:
        return array.astype(np.int32)
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < -INT32_MAX - 1 or high > INT32_MAX:
            bad = high if high > INT32_MAX else low
            raise ValueError(
                f"{name} holds {bad:,}, which int32 cannot hold: the kernels index with int32, "
                f"so at most {INT32_MAX:,} rows or columns"
            )
    return array.astype(np.int32)


def check_int32_ids(count, name):
    """Refuse ``count`` ids (``0..count - 1``) that int32 results could not hold."""
    if count - 1 > INT32_MAX:
        raise ValueError(
            f"{name} has {count:,} rows: ids are returned as int32, at most {INT32_MAX + 1:,}"
        )


def check_solve_operands(Cui, X, Y, YtY, dtypes):
    """Check the shapes, dtypes and layout a kernel-backed ``solve`` relies on.

    Index ranges are the caller's to check (``als.validation``); this is the part a backend
    kernel needs besides: ``X`` rows match ``Cui`` rows, ``Y`` rows match its columns, one
    factor dtype out of ``dtypes``, C-contiguous factors.
    """
    n_rows, n_columns = Cui.shape
    factors = X.shape[1]
    if X.shape[0] != n_rows or Y.shape != (n_columns, factors) or YtY.shape != (factors,) * 2:
        raise ValueError(
            f"shapes do not line up: Cui {Cui.shape}, X {X.shape}, Y {Y.shape}, YtY {YtY.shape}"
        )
    if X.dtype != Y.dtype or X.dtype not in dtypes:
        raise TypeError(f"factor dtypes differ or are unsupported: X {X.dtype}, Y {Y.dtype}")
    for name, array in (("X", X), ("Y", Y), ("YtY", YtY)):
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")


#: backend name -> "module:class", the module relative to this package; the module may raise
#: BackendUnavailable on construction
BACKENDS = {
    "numpy": ".numpy_ref:NumpyBackend",
    "cpu": ".numba_cpu:NumbaBackend",
    "cuda": ".cupy_cuda:CupyBackend",
}


def get_backend(name: str = "auto", num_threads: int = 0) -> Backend:
    """Return a ready backend by name.

    Parameters
    ----------
    name : {"auto", "cpu", "cuda", "numpy"}
        ``"auto"`` picks ``"cuda"`` when CuPy and a CUDA device are usable, else ``"cpu"``.
    num_threads : int
        CPU threads for the CPU backends; 0 means all cores.

    Raises
    ------
    ValueError
        For a name that is not a backend.
    BackendUnavailable
        When the backend cannot run here; the message says what is missing.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a backend name or a Backend, not {type(name).__name__}")
    if name == "auto":
        try:
            return get_backend("cuda", num_threads)
        except BackendUnavailable:
            return get_backend("cpu", num_threads)
    if name not in BACKENDS:
        choices = ", ".join(["auto", *BACKENDS])
        raise ValueError(f"unknown backend {name!r}: choose one of {choices}")
    module_name, class_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name, __package__)
    except ImportError as exc:
        raise BackendUnavailable(f"the {name!r} backend cannot be imported: {exc}") from exc
    return getattr(module, class_name)(num_threads=num_threads)


def available_backends() -> dict[str, str | None]:
    """Map every backend name to None when it can run here, else the reason it cannot."""
    reasons: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            get_backend(name)
            reasons[name] = None
        except BackendUnavailable as exc:
            reasons[name] = str(exc)
    return reasons
