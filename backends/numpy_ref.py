"""The reference backend: NumPy and SciPy running the plain array statement of the algorithm.

It is the oracle of the tests: every other backend is checked against it. It adds nothing to
``backends.xp_generic.ArrayModuleBackend`` but the choice of ``numpy``/``scipy.sparse`` as the
array modules, so what it computes is exactly what that module's docstring states.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .xp_generic import ArrayModuleBackend

__all__ = ["NumpyBackend"]


class NumpyBackend(ArrayModuleBackend):
    """Reference backend on NumPy and SciPy.

    Parameters
    ----------
    num_threads : int
        Accepted for a uniform constructor; NumPy's BLAS uses its own thread pool.
    """

    name = "numpy"
    dtypes = (np.dtype(np.float32), np.dtype(np.float64))

    def __init__(self, num_threads=0):
        super().__init__(num_threads=num_threads, xp=np, sparse=scipy.sparse)
