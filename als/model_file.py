"""The model-file schema: which arrays a model's ``.npz`` file holds, and the checks on reading.

``save`` writes format 2, which is also an implicit 0.7 model file. implicit's ``load`` sets
an attribute on its model for every array in the file, so the top level holds only what
implicit's own ``save`` writes, meaning what it means there (the factors, ``factors``,
``regularization``, ``alpha``, ``dtype``, ``use_native``, ``use_cg``, ``cg_steps``,
``iterations``, ``calculate_training_loss``, ``num_threads``, ``random_state``), plus
``format_version``. Everything else is kept under names implicit's model never reads:
``als/<parameter>`` for the parameters implicit does not have (``solver``, ``confidence``,
``backend``, ...) and for ``use_cg`` and ``cg_steps`` as ``als`` means them (``cg_steps=None``,
the exact solve, is ``use_cg=False`` to implicit); ``extra/<name>`` for the arrays given to
``save(..., extra=...)``.

Reading accepts every format: 0 (implicit's own files, no ``format_version``), 1 (every
parameter at the top level, ``cg_steps`` -1 for None) and 2. Nothing read is trusted: each
parameter is checked against its rule, the factors against each other, before a model is
built from them.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import ModelFileError

__all__ = [
    "FORMAT_VERSION",
    "SAVED_PARAMS",
    "model_arrays",
    "check_model_arrays",
    "saved_params",
    "extra_arrays",
]

#: version of the files written by ``save``; files written by implicit 0.7 have none (0)
FORMAT_VERSION = 2

#: the parameters implicit 0.7's ``save`` writes besides dtype and random_state
IMPLICIT_PARAMS = (
    "factors",
    "regularization",
    "alpha",
    "use_native",
    "use_cg",
    "iterations",
    "calculate_training_loss",
    "num_threads",
    "cg_steps",
)

#: the parameters implicit does not have
ALS_OPTIONS = ("confidence", "epsilon", "alpha0", "nu", "init_stddev", "solver", "block_size")

#: the constructor parameters a model file keeps (besides dtype, random_state, backend, use_gpu)
SAVED_PARAMS = IMPLICIT_PARAMS + ALS_OPTIONS

#: format 2's prefix for what implicit's model must not read, and the prefix of ``extra``
ALS_PREFIX = "als/"
EXTRA_PREFIX = "extra/"

#: what format 2 keeps under ``als/``: what implicit has no parameter for, and ``use_cg`` and
#: ``cg_steps`` as ``als`` means them
ALS_PARAMS = ("use_cg", "cg_steps", "backend", "use_gpu") + ALS_OPTIONS

#: implicit's default number of CG steps, written where ``als`` solves exactly
IMPLICIT_CG_STEPS = 3

#: the arrays that hold one value each (and their ``als/`` twins)
SCALARS = SAVED_PARAMS + ("dtype", "random_state", "format_version", "backend", "use_gpu")


def model_arrays(params, dtype, user_factors, item_factors, extra=None):
    """The arrays of a format-2 model file.

    Parameters
    ----------
    params : dict
        The model's constructor parameters (a backend given as an instance replaced by its
        name).
    dtype : numpy.dtype
        The factor dtype.
    user_factors, item_factors : numpy.ndarray or None
        The factors; None for an unfitted model.
    extra : dict of str to array_like, optional
        More arrays to store beside the model, as ``extra/<name>``.

    Raises
    ------
    TypeError
        When an ``extra`` array holds Python objects (model files never contain pickles).
    """
    exact = params["cg_steps"] is None
    arrays = {name: params[name] for name in IMPLICIT_PARAMS}
    arrays["use_cg"] = bool(params["use_cg"]) and not exact
    arrays["cg_steps"] = IMPLICIT_CG_STEPS if exact else params["cg_steps"]
    arrays["dtype"] = dtype.name
    if isinstance(params["random_state"], numbers.Integral):
        arrays["random_state"] = params["random_state"]
    arrays["user_factors"] = user_factors
    arrays["item_factors"] = item_factors
    arrays["format_version"] = FORMAT_VERSION
    for name in ALS_PARAMS:
        arrays[ALS_PREFIX + name] = params[name]
    arrays[ALS_PREFIX + "cg_steps"] = -1 if exact else params["cg_steps"]
    use_gpu = params["use_gpu"]
    arrays[ALS_PREFIX + "use_gpu"] = None if use_gpu is None else bool(use_gpu)
    for key, value in (extra or {}).items():
        array = arrays[EXTRA_PREFIX + key] = np.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(
                f"extra[{key!r}] holds Python objects: model files never contain pickles; "
                "give numbers or strings"
            )
    # None cannot be stored without a pickle: an absent array means the default
    return {key: value for key, value in arrays.items() if value is not None}


def saved_params(arrays):
    """The constructor parameters and the factor dtype stored in checked model ``arrays``.

    Returns
    -------
    params : dict
        The parameters the file holds (those it lacks keep their defaults).
    dtype : numpy.dtype
    """
    names = SAVED_PARAMS + ("random_state", "backend", "use_gpu")
    # format 2 keeps the value als means under als/, the one implicit means at the top
    prefixes = (ALS_PREFIX, "") if _version(arrays) >= 2 else ("",)
    params = {}
    for name in names:
        key = next((p + name for p in prefixes if p + name in arrays), None)
        if key is not None:
            params[name] = arrays[key].item()
    if params.get("cg_steps") == -1:
        params["cg_steps"] = None
    if "use_gpu" in params:
        params["use_gpu"] = bool(params["use_gpu"])
    if "backend" in params:
        params["backend"] = str(params["backend"])
    return params, np.dtype(str(arrays.get("dtype", "float32")))


def extra_arrays(arrays):
    """The ``extra`` arrays stored by ``save``, by the names they were given."""
    return {
        key[len(EXTRA_PREFIX) :]: value
        for key, value in arrays.items()
        if key.startswith(EXTRA_PREFIX)
    }


def _version(arrays):
    return int(arrays["format_version"]) if "format_version" in arrays else 0


def _valid_param(value, kinds, valid):
    if bool in kinds:
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    return isinstance(value, kinds) and not isinstance(value, bool) and bool(valid(value))


#: what a saved parameter may be: (Python types, check, the rule in words)
PARAM_RULES = {
    "factors": ((int,), lambda v: v >= 1, "an integer >= 1"),
    "iterations": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "num_threads": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "cg_steps": ((int,), lambda v: v == -1 or v >= 1, "-1 (exact solve) or an integer >= 1"),
    "random_state": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "format_version": ((int,), lambda v: v >= 0, "an integer >= 0"),
    "regularization": ((int, float), lambda v: np.isfinite(v) and v >= 0, "a finite number >= 0"),
    "alpha": ((int, float), lambda v: np.isfinite(v) and v > 0, "a finite number > 0"),
    "use_native": ((bool,), lambda v: True, "true or false"),
    "use_cg": ((bool,), lambda v: True, "true or false"),
    "calculate_training_loss": ((bool,), lambda v: True, "true or false"),
}


def check_model_arrays(arrays, name):
    """Refuse model arrays that are missing, too new, out of range or inconsistent.

    Parameters
    ----------
    arrays : dict of str to numpy.ndarray
        The arrays read from a file.
    name : str or file object
        The file, named in messages.

    Raises
    ------
    ModelFileError
        Naming the file and what is wrong with it.
    """
    for key in SCALARS:
        for stored in (key, ALS_PREFIX + key):
            if stored in arrays and arrays[stored].shape != ():
                raise ModelFileError(f"{name} is corrupted: {stored!r} should be a single value")
    for key, (kinds, valid, rule) in PARAM_RULES.items():
        for stored in (key, ALS_PREFIX + key):
            if stored in arrays and not _valid_param(arrays[stored].item(), kinds, valid):
                raise ModelFileError(
                    f"{name} is corrupted: {stored} is {arrays[stored].item()!r}, not {rule}"
                )
    version = _version(arrays)
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{name} was written by a newer als (format {version}); this version reads "
            f"formats up to {FORMAT_VERSION}: upgrade als"
        )
    missing = {"user_factors", "item_factors", "factors"} - set(arrays)
    # an unfitted model's file has its parameters and neither factor array
    if missing and missing != {"user_factors", "item_factors"}:
        raise ModelFileError(f"{name} is not a model file: no {', '.join(sorted(missing))}")
    if "dtype" in arrays:
        _check_dtype(arrays["dtype"], name)
    _check_factors(arrays, name)


def _check_dtype(stored, name):
    try:
        dtype = np.dtype(str(stored))
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "f" or dtype.itemsize > 8:
        raise ModelFileError(f"{name} is corrupted: dtype is {str(stored)!r}, not a float dtype")


def _check_factors(arrays, name):
    """Both factor arrays or neither (checked by the caller), float, ``factors`` columns."""
    factors = arrays["factors"].item()
    for key in ("user_factors", "item_factors"):
        array = arrays.get(key)
        if array is None:
            continue
        if array.ndim != 2 or array.shape[1] != factors or array.dtype.kind != "f":
            raise ModelFileError(
                f"{name} is corrupted: {key} is {array.dtype} {array.shape}, expected a float "
                f"array with {factors} columns"
            )
    users, items = arrays.get("user_factors"), arrays.get("item_factors")
    if users is not None and users.dtype != items.dtype:
        raise ModelFileError(
            f"{name} is corrupted: user_factors are {users.dtype} but item_factors {items.dtype}"
        )
