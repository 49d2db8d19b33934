"""The interface every compute backend implements, and lookup of a backend by name.

A backend owns where arrays live (host memory, GPU memory) and the numerical kernels that
touch them. The model (``als.model``) owns everything else: validation, defaults, the fit
loop. It calls only the methods below, so it never needs to know which backend it holds.

Arrays a backend hands out are "device arrays": ``numpy.ndarray`` for the CPU backends,
``cupy.ndarray`` on the GPU. Sparse matrices are CSR in the backend's own sparse type.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "BackendUnavailable", "BACKENDS", "get_backend", "available_backends"]


class BackendUnavailable(RuntimeError):
    """Raised when a backend was asked for but cannot run here (package or device missing)."""


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

    def solve(self, Cui: Any, X: Any, Y: Any, YtY: Any, cg_steps: int | None) -> None:
        """Update every row of ``X`` in place given ``Y`` and ``YtY = gram(Y, lambda)``.

        ``cg_steps`` conjugate-gradient steps warm-started from the current ``X``, or the
        exact solution (Cholesky) when ``cg_steps`` is None. Rows of ``Cui`` with no entries
        become zero.
        """

    def loss(self, Cui: Any, X: Any, Y: Any, regularization: float) -> float:
        """Return implicit's normalised training loss of the factorisation."""

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


#: backend name -> "module:class"; the module may raise BackendUnavailable on construction
BACKENDS = {
    "numpy": "backends.numpy_ref:NumpyBackend",
    "cpu": "backends.numba_cpu:NumbaBackend",
    "cuda": "backends.cupy_cuda:CupyBackend",
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
        module = importlib.import_module(module_name)
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
