"""The fit core: what one ALS fit does, written once for the model and for the Dask fit.

``AlternatingLeastSquares.fit`` (one machine) and ``als.distributed.fit_distributed`` (a
cluster) both take from here:

- ``SolverSettings``: the checked parameters of a fit, read from the model's public
  attributes, with lambda as the solver takes it (rounded to float32 in CG mode, as
  implicit's C solver does);
- ``initial_factors``: the one initialisation scheme, drawn on the host;
- ``confidence``: weights scaled by alpha in float32, as implicit scales them;
- ``USERS`` / ``ITEMS``: the two sides of a half-iteration, so that solving users and solving
  items is the same call with the roles swapped (``Side.other``), never a string test;
- ``solve_side``: one half-iteration's solve and the finiteness guard behind it;
- ``normalised_loss``: the loss from its parts (``backends.base.LossParts``: observed,
  unobserved through the Gramian) plus the regularisation, normalised in one place;
  ``training_loss`` applies it to one backend's factors.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from backends.base import LossParts

from .errors import InvalidTypeError, UserError
from .validation import check_dtype, check_finite_real, check_positive_int

__all__ = [
    "ITEMS",
    "ModelFitError",
    "SIDES",
    "USERS",
    "Side",
    "SolverSettings",
    "add_loss_parts",
    "confidence",
    "initial_factors",
    "normalised_loss",
    "solve_side",
    "training_loss",
]


class ModelFitError(UserError, RuntimeError):
    """Raised when training produced factors that are not finite."""


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of the factorisation and the names its arguments go by."""

    #: plural, as in "solving users"
    name: str
    #: singular, as in "user_factors"
    singular: str
    #: the interactions argument whose rows are this side's
    matrix_name: str

    @property
    def factors_name(self):
        return f"{self.singular}_factors"

    @property
    def ids_name(self):
        return f"{self.singular}ids"

    @property
    def other(self):
        # equality, not identity: a side sent to a Dask worker arrives as a copy
        return ITEMS if self == USERS else USERS


USERS = Side("users", "user", "user_items")
ITEMS = Side("items", "item", "item_users")
#: the order of one iteration: users given items, then items given users
SIDES = (USERS, ITEMS)


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """The checked parameters of one fit.

    Attributes
    ----------
    factors, iterations : int
    regularization : float
        lambda as given (the training loss uses it).
    alpha : float
    dtype : numpy.dtype
        The factor dtype.
    cg_steps : int or None
        Conjugate-gradient steps per half-iteration; None solves exactly.
    calculate_training_loss : bool
    """

    factors: int
    iterations: int
    regularization: float
    alpha: float
    dtype: np.dtype
    cg_steps: int | None
    calculate_training_loss: bool

    @classmethod
    def from_model(cls, model, backend=None):
        """Check a model's parameters and return them as settings.

        Parameters
        ----------
        model : AlternatingLeastSquares
        backend : Backend, optional
            The backend that will train: ``dtype`` must be one it supports.

        Raises
        ------
        InvalidTypeError, InvalidValueError
            Naming the parameter and the problem.
        """
        factors = check_positive_int(model.factors, "factors")
        iterations = check_positive_int(model.iterations, "iterations", minimum=0)
        regularization = check_finite_real(model.regularization, "regularization", minimum=0)
        alpha = check_finite_real(model.alpha, "alpha", exclusive_minimum=0)
        if model.cg_steps is not None:
            check_positive_int(model.cg_steps, "cg_steps")
        dtype = check_dtype(model.dtype)
        if backend is not None and dtype not in backend.dtypes:
            names = ", ".join(d.name for d in backend.dtypes)
            raise InvalidTypeError(
                f"dtype={dtype.name} is not supported by the {backend.name!r} backend "
                f"(supported: {names})"
            )
        return cls(
            factors=factors,
            iterations=iterations,
            regularization=regularization,
            alpha=alpha,
            dtype=dtype,
            cg_steps=int(model.cg_steps) if model.use_cg and model.cg_steps is not None else None,
            calculate_training_loss=bool(model.calculate_training_loss),
        )

    @property
    def solve_regularization(self):
        """lambda as the solver uses it: implicit's CG takes it as a C float, so in CG mode
        it is rounded to float32, float64 factors included."""
        if self.cg_steps is None:
            return self.regularization
        return float(np.float32(self.regularization))


def initial_factors(rng, rows, factors, dtype):
    """``rng.random((rows, factors)) * 0.01`` in ``dtype``, as implicit draws them.

    NumPy draws only float32 and float64; float16 factors are float32 draws, rounded. The
    values depend only on the stream: drawing a block of rows at a time from the stream's
    state at its first row gives the same rows (``als.distributed`` relies on it).
    """
    dtype = np.dtype(dtype)
    draw = np.dtype(np.float32) if dtype.itemsize < 4 else dtype
    drawn = rng.random((rows, factors), dtype=draw) * draw.type(0.01)
    return drawn.astype(dtype, copy=False)


def confidence(matrix, alpha):
    """``alpha * weights`` of a canonical float32 CSR matrix, in float32 as implicit does.

    The caller's matrix is not modified.
    """
    if alpha != 1.0:
        matrix = matrix.copy()
        matrix.data *= np.float32(alpha)
    return matrix


def solve_side(backend, matrix, own, other, gram, cg_steps, iteration, side):
    """Solve ``own`` (the factors of ``side``) in place given ``other`` and its Gram matrix.

    ``matrix`` holds one row of confidences per row of ``own``. Raises ``ModelFitError``
    naming the iteration and the side when the new factors are not all finite: the guard
    that keeps NaN factors from ever being served.
    """
    backend.solve(matrix, own, other, gram, cg_steps)
    if not backend.all_finite(own):
        raise ModelFitError(
            f"the {side.singular} factors became NaN or infinite in iteration {iteration} "
            f"(solving {side.name}); lower alpha, raise regularization or use float64"
        )


def add_loss_parts(parts):
    """The parts of several disjoint blocks of rows, summed field by field."""
    return LossParts(*(sum(values) for values in zip(*parts, strict=True)))


def normalised_loss(parts, squared_norms, regularization):
    """implicit's normalised training loss from its parts: the one place it is normalised.

    ``(observed + unobserved + lambda (|X|^2 + |Y|^2)) / (confidence + missing cells)``:
    the stored entries weigh their confidence, every missing cell weighs 1.

    Parameters
    ----------
    parts : backends.base.LossParts
        The unregularised parts, over every row.
    squared_norms : float
        ``|X|^2 + |Y|^2``, the squared Frobenius norms of both factor matrices.
    regularization : float
        lambda.
    """
    regularized = parts.observed + parts.unobserved + regularization * squared_norms
    return regularized / (parts.confidence + parts.missing)


def training_loss(backend, Cui, X, Y, regularization):
    """implicit's normalised training loss of factors ``X`` (rows of ``Cui``) and ``Y``.

    All arguments are device arrays of ``backend``; ``Cui`` holds confidences.
    """
    squared_norms = backend.squared_norm(X) + backend.squared_norm(Y)
    return normalised_loss(backend.loss_parts(Cui, X, Y), squared_norms, regularization)
