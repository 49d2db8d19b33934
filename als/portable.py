"""A model's ways out of its process and its backend: model files, pickles and copies.

``PortableModelMixin`` gives a model ``save`` and ``load`` (``.npz`` files laid out as
``als.model_file`` says, written and read by ``als.persistence``), pickling that never holds
a backend, and ``to_cpu``/``to_gpu`` copies. Each rebuilds a model from its constructor's
parameters and its factors as NumPy arrays.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from als.backends.base import BackendUnavailable

from .errors import ModelFileError, ParameterWarning
from .fitting import SIDES
from .model_file import SAVED_PARAMS, check_model_arrays, extra_arrays, model_arrays, saved_params
from .persistence import read_npz, write_npz
from .validation import check_factor_array

__all__ = ["PortableModelMixin"]


class PortableModelMixin:
    """Saving, loading, pickling and copying a model.

    The model keeps its constructor's keyword parameters as attributes of the same names,
    has a ``fit_callback`` attribute, and provides ``user_factors`` and ``item_factors``
    (NumPy or None), ``backend_`` and ``backend_name``, ``_dtype()``,
    ``_set_factors(side, factors)`` (kept as given: NumPy before the backend is resolved,
    backend memory after) and ``_clear_caches()``.
    """

    def _params(self):
        """The constructor's parameters, a backend instance replaced by its name."""
        names = list(inspect.signature(type(self).__init__).parameters)[1:]
        params = {name: getattr(self, name) for name in names}
        if not (params["backend"] is None or isinstance(params["backend"], str)):
            params["backend"] = params["backend"].name
        return params

    def __getstate__(self):
        """Pickle parameters, ``fit_callback`` and factors as NumPy arrays; never the backend.

        The backend is chosen again from the same parameters (a backend is kept by name)
        when the unpickled model is first used, so a model pickled on a GPU machine with
        ``backend="auto"`` runs on the CPU elsewhere. One that asked for the GPU
        (``backend="cuda"`` or ``use_gpu=True``) unpickles anywhere, but its first query
        raises ``BackendUnavailable`` saying what is missing; ``to_cpu()`` (which needs no
        GPU) returns a copy on the CPU. ``copy.deepcopy`` goes the same way.
        """
        return {
            "params": self._params(),
            "fit_callback": self.fit_callback,
            "user_factors": self.user_factors,
            "item_factors": self.item_factors,
        }

    def __setstate__(self, state):
        self.__init__(**state["params"])
        self.fit_callback = state["fit_callback"]
        # NumPy until the backend is resolved on first use (see backend_)
        for side in SIDES:
            self._set_factors(side, state[side.factors_name])

    def _copy_to(self, backend):
        model = type(self)(
            **{name: getattr(self, name) for name in SAVED_PARAMS},
            dtype=self.dtype,
            random_state=self.random_state,
            backend=backend,
        )
        model.user_factors = self.user_factors
        model.item_factors = self.item_factors
        return model

    def to_gpu(self):
        """Return a copy of this model on the CUDA backend."""
        return self._copy_to("cuda")

    def to_cpu(self):
        """Return a copy of this model on the Numba CPU backend."""
        return self._copy_to("cpu")

    def save(self, fileobj_or_path, extra=None):
        """Save parameters and factors with ``np.savez`` (no pickles), atomically.

        An unfitted model is saved too: its parameters only.

        A path without the ``.npz`` suffix gets it, as with ``np.savez``. The file is written
        to a temporary name and renamed, so a crash never leaves a partial file behind.

        The file is an implicit 0.7 model file too:
        ``implicit.cpu.als.AlternatingLeastSquares.load(path)`` (or ``load`` on a model that
        ``implicit.als.AlternatingLeastSquares`` made) gives the same factors and
        recommendations, and the parameters implicit has; ``cg_steps=None`` (the exact solve)
        reads as implicit's ``use_cg=False``. Options implicit lacks (``confidence``,
        ``alpha0``, ``nu``, ``solver``, ``backend``, ...) are stored under ``als/`` names,
        which implicit's loader keeps as unused attributes: a fit continued in implicit trains
        implicit's model. ``load`` reads these files, those of every earlier format and
        implicit's own; the layout is ``als.model_file``'s.

        Parameters
        ----------
        fileobj_or_path : str, os.PathLike or file object
        extra : dict of str to ndarray, optional
            More arrays to store beside the model (e.g. id maps), as ``extra/<name>``; read
            them back with ``load(..., return_extra=True)``.

        Raises
        ------
        TypeError
            When an ``extra`` array holds Python objects.
        """
        arrays = model_arrays(
            self._params(), self._dtype(), self.user_factors, self.item_factors, extra
        )
        write_npz(fileobj_or_path, arrays)

    @classmethod
    def load(cls, fileobj_or_path, backend=None, return_extra=False):
        """Load a model written by ``save`` or by implicit 0.7's ``save``.

        Parameters
        ----------
        fileobj_or_path : str, os.PathLike or file object
        backend : str or Backend, optional
            Backend for the loaded model, replacing the saved ``backend`` and ``use_gpu``
            (default: as saved; files without them, such as implicit's, choose
            automatically). A model saved with ``backend="cuda"`` or ``use_gpu=True`` needs
            a GPU unless this says otherwise (``backend="cpu"`` or ``"auto"``).
        return_extra : bool
            Also return the ``extra`` arrays stored by ``save``.

        Raises
        ------
        FileNotFoundError
            When there is no such file.
        ModelFileError
            For a file that is not an intact model file (truncated, corrupted, foreign,
            holding pickles, inconsistent shapes) or one written by a newer version.
        """
        arrays = read_npz(fileobj_or_path)
        check_model_arrays(arrays, fileobj_or_path)
        params, dtype = saved_params(arrays)
        if backend is not None:
            params.update(backend=backend, use_gpu=None)
        model = cls(**params, dtype=dtype)
        if "user_factors" in arrays:  # an unfitted model's file has no factors
            try:
                backend_ = model.backend_
            except BackendUnavailable as exc:
                raise BackendUnavailable(
                    f"{exc}; load(..., backend='cpu') loads this model on the CPU"
                ) from exc
            if model._dtype() not in backend_.dtypes:
                # e.g. float16 factors from a GPU, served by a CPU backend
                warnings.warn(
                    f"{fileobj_or_path} holds {model._dtype().name} factors, which the "
                    f"{model.backend_name!r} backend does not support: loaded as float32",
                    ParameterWarning,
                    stacklevel=2,
                )
                model.dtype = np.float32
            for side in SIDES:
                # popped, not copied: the file's arrays become the model's (peak memory ~1x)
                key = side.factors_name
                try:
                    factors = check_factor_array(arrays.pop(key), key, model._dtype())
                except ValueError as exc:
                    raise ModelFileError(f"{fileobj_or_path} is corrupted: {exc}") from exc
                model._set_factors(side, backend_.to_device(factors))
            model._clear_caches()
        return (model, extra_arrays(arrays)) if return_extra else model
