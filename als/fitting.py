"""The fit core: what one ALS fit does, written once for the model and for the Dask fit.

``AlternatingLeastSquares.fit`` (one machine) and ``als.distributed.fit_distributed`` (a
cluster) both take from here:

- ``SolverSettings``: the checked parameters of a fit, read from the model's public
  attributes, with lambda as the solver takes it (rounded to float32 in CG mode, as
  implicit's C solver does);
- ``initial_factors``: the one initialisation scheme, drawn on the host;
- ``confidence``: weights scaled by alpha in float32, as implicit scales them, or one of the
  opt-in confidence functions (``CONFIDENCE_FUNCTIONS``);
- the opt-in model options of Rendle, Krichene, Zhang, Koren (RecSys 2022), stated once in
  ``SolverSettings`` (see its docstring): the unobserved weight ``alpha0``, frequency-scaled
  regularisation ``nu`` and the initialisation scale ``init_stddev``; the backends only see a
  confidence matrix, a Gram matrix and, when lambda differs by row, a per-row lambda;
- ``USERS`` / ``ITEMS``: the two sides of a half-iteration, so that solving users and solving
  items is the same call with the roles swapped (``Side.other``), never a string test;
- ``solve_side``: one half-iteration's solve and the finiteness guard behind it;
- ``run_iterations``: the loop around the half-iterations (progress bar, loss, callback
  timing), the same for both fits;
- ``normalised_loss``: the loss from its parts (``backends.base.LossParts``: observed,
  unobserved through the Gramian) plus the regularisation, normalised in one place;
  ``training_loss`` applies it to one backend's factors.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from tqdm.auto import tqdm

from als.backends.base import LossParts

from .compile_note import compile_note
from .errors import InvalidTypeError, ModelFitError
from .validation import check_choice, check_dtype, check_finite_real, check_positive_int

#: the confidence functions of ``confidence``: implicit's ``alpha * r`` (the default),
#: Hu-Koren-Volinsky's ``1 + alpha * r`` and ``1 + alpha * log(1 + r / epsilon)``
CONFIDENCE_FUNCTIONS = ("implicit", "hkv", "log")

__all__ = [
    "CONFIDENCE_FUNCTIONS",
    "ITEMS",
    "ModelFitError",
    "SIDES",
    "SOLVERS",
    "USERS",
    "Side",
    "SolverSettings",
    "add_loss_parts",
    "confidence",
    "initial_factors",
    "normalised_loss",
    "run_iterations",
    "solve_side",
    "training_loss",
]


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


#: the ``solver`` choices: implicit's conjugate gradient (or exact, ``use_cg=False``), and
#: iALS++ subspace block coordinate descent (Rendle et al. 2021), one sweep per half-iteration
SOLVERS = ("cg", "ials++")


@dataclasses.dataclass(frozen=True)
class SolverSettings:
    """The checked parameters of one fit, and what the opt-in model options mean.

    The model minimises, over the stored entries (confidence ``c``, preference ``p``) and
    the unobserved cells, with ``s = x_u . y_i``::

        sum_stored c (p - s)^2 + alpha0 sum_unobserved s^2
            + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2

    with ``lambda_u = lambda * (n_u + alpha0 * n_items) ** nu`` for a user with ``n_u``
    entries (items alike, with ``n_users``). The defaults (``confidence="implicit"``,
    ``alpha0=1``, ``nu=0``) are implicit's model, computed exactly as implicit does.

    Dividing the whole objective by ``alpha0`` changes neither its minimiser nor its
    normalised value, so the backends solve the implicit-form problem with confidences
    ``c / alpha0`` (``confidences``) and lambdas ``lambda_u / alpha0``: as one Gram term
    (``gram_regularization``) when every row has the same lambda, else as a per-row vector
    (``row_regularization``). The Gram term ``Y^T Y`` then stands for ``alpha0 Y^T Y`` and
    each stored entry adds ``(c - alpha0) y y^T``.

    Attributes
    ----------
    factors, iterations : int
    regularization : float
        lambda as given.
    alpha : float
    dtype : numpy.dtype
        The factor dtype.
    cg_steps : int or None
        Conjugate-gradient steps per half-iteration; None solves exactly.
    calculate_training_loss : bool
    confidence : str
        One of ``CONFIDENCE_FUNCTIONS``.
    epsilon : float
        The ``epsilon`` of the logarithmic confidence.
    alpha0 : float
        The weight of an unobserved cell.
    nu : float
        The frequency exponent of the regularisation (0: the same lambda for every row).
    init_stddev : float or None
        None draws implicit's ``U[0, 1) * 0.01`` initial factors, a number normal ones with
        standard deviation ``init_stddev / sqrt(factors)``.
    block_size : int or None
        ``solver="ials++"``: dimensions per block of the iALS++ subspace solve (at most
        ``factors``); None for the default conjugate-gradient (or exact) solver.
    """

    factors: int
    iterations: int
    regularization: float
    alpha: float
    dtype: np.dtype
    cg_steps: int | None
    calculate_training_loss: bool
    confidence: str = "implicit"
    epsilon: float = 1.0
    alpha0: float = 1.0
    nu: float = 0.0
    init_stddev: float | None = None
    block_size: int | None = None

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
        block_size = None
        if check_choice(getattr(model, "solver", "cg"), SOLVERS, "solver") == "ials++":
            block_size = min(check_positive_int(model.block_size, "block_size"), factors)
        if backend is not None and dtype not in backend.dtypes:
            names = ", ".join(d.name for d in backend.dtypes)
            raise InvalidTypeError(
                f"dtype={dtype.name} is not supported by the {backend.name!r} backend "
                f"(supported: {names})"
            )
        init_stddev = getattr(model, "init_stddev", None)
        if init_stddev is not None:
            init_stddev = check_finite_real(init_stddev, "init_stddev", exclusive_minimum=0)
        return cls(
            factors=factors,
            iterations=iterations,
            regularization=regularization,
            alpha=alpha,
            dtype=dtype,
            cg_steps=int(model.cg_steps) if model.use_cg and model.cg_steps is not None else None,
            calculate_training_loss=bool(model.calculate_training_loss),
            confidence=check_choice(
                getattr(model, "confidence", "implicit"), CONFIDENCE_FUNCTIONS, "confidence"
            ),
            epsilon=check_finite_real(
                getattr(model, "epsilon", 1.0), "epsilon", exclusive_minimum=0
            ),
            alpha0=check_finite_real(getattr(model, "alpha0", 1.0), "alpha0", exclusive_minimum=0),
            nu=check_finite_real(getattr(model, "nu", 0.0), "nu"),
            init_stddev=init_stddev,
            block_size=block_size,
        )

    @property
    def implicit_model(self):
        """True when the model options are implicit's (the initialisation aside)."""
        return self.confidence == "implicit" and self.alpha0 == 1.0 and self.nu == 0.0

    def confidences(self, matrix):
        """The confidence matrix the backends solve with: ``c / alpha0`` (see the class)."""
        matrix = confidence(matrix, self.alpha, self.confidence, self.epsilon)
        if self.alpha0 != 1.0:
            matrix = matrix.copy()
            matrix.data *= np.float32(1.0 / self.alpha0)
        return matrix

    @property
    def gram_regularization(self):
        """The lambda of ``gram``: ``solve_regularization / alpha0``, or 0 when lambda is
        per row (``row_regularization`` carries it)."""
        if self.nu != 0.0:
            return 0.0
        return self.solve_regularization / self.alpha0

    @property
    def loss_regularization(self):
        """The lambda the loss weighs ``|X|^2 + |Y|^2`` by when it is the same for every row."""
        return self.regularization / self.alpha0

    def row_regularization(self, matrix):
        """``lambda_u / alpha0`` for every row of the host CSR ``matrix`` (rows are one side,
        columns the other), in the factor dtype; None when every row has the same lambda."""
        if self.nu == 0.0:
            return None
        counts = np.diff(matrix.indptr).astype(np.float64)
        scaled = self.regularization * (counts + self.alpha0 * matrix.shape[1]) ** self.nu
        return (scaled / self.alpha0).astype(self.dtype)

    @property
    def solve_regularization(self):
        """lambda as the solver uses it: implicit's CG takes it as a C float, so in CG mode
        it is rounded to float32, float64 factors included."""
        if self.cg_steps is None or self.block_size is not None:
            return self.regularization
        return float(np.float32(self.regularization))


def initial_factors(rng, rows, factors, dtype, stddev=None):
    """``rng.random((rows, factors)) * 0.01`` in ``dtype``, as implicit draws them.

    NumPy draws only float32 and float64; float16 factors are float32 draws, rounded. The
    values depend only on the stream: drawing a block of rows at a time from the stream's
    state at its first row gives the same rows (``als.distributed`` relies on it).

    With ``stddev``, normal draws of standard deviation ``stddev / sqrt(factors)`` instead,
    as Rendle et al. (2022) initialise.
    """
    dtype = np.dtype(dtype)
    draw = np.dtype(np.float32) if dtype.itemsize < 4 else dtype
    if stddev is None:
        drawn = rng.random((rows, factors), dtype=draw) * draw.type(0.01)
    else:
        scale = draw.type(stddev / np.sqrt(factors))
        drawn = rng.standard_normal((rows, factors), dtype=draw) * scale
    return drawn.astype(dtype, copy=False)


def confidence(matrix, alpha, function="implicit", epsilon=1.0):
    """Confidences of a canonical float32 CSR matrix of weights ``r``, in float32.

    ``function`` is one of ``CONFIDENCE_FUNCTIONS``: ``"implicit"``, ``alpha * r`` exactly as
    implicit computes it; ``"hkv"``, ``1 + alpha * |r|``; ``"log"``,
    ``1 + alpha * log(1 + |r| / epsilon)``. The sign of ``r`` is kept (a negative weight is
    a disliked item with confidence ``|c|``). The caller's matrix is not modified.
    """
    if function == "implicit":
        if alpha != 1.0:
            matrix = matrix.copy()
            matrix.data *= np.float32(alpha)
        return matrix
    check_choice(function, CONFIDENCE_FUNCTIONS, "confidence")
    weights = np.abs(matrix.data.astype(np.float64))
    if function == "log":
        weights = np.log1p(weights / epsilon)
    matrix = matrix.copy()
    matrix.data = (np.sign(matrix.data) * (1.0 + alpha * weights)).astype(np.float32)
    return matrix


def solve_side(
    backend,
    matrix,
    own,
    other,
    gram,
    cg_steps,
    iteration,
    side,
    row_regularization=None,
    block_size=None,
):
    """Solve ``own`` (the factors of ``side``) in place given ``other`` and its Gram matrix.

    ``matrix`` holds one row of confidences per row of ``own``; ``row_regularization`` is
    the device vector of ``SolverSettings.row_regularization`` or None. With a
    ``block_size``, one iALS++ sweep (``backend.solve_subspace``) replaces the CG or exact
    solve. Raises ``ModelFitError`` naming the iteration and the side when the new factors
    are not all finite: the guard that keeps NaN factors from ever being served.
    """
    if block_size is not None:
        backend.solve_subspace(
            matrix, own, other, gram, block_size, row_regularization=row_regularization
        )
    elif row_regularization is None:
        backend.solve(matrix, own, other, gram, cg_steps)
    else:
        backend.solve(matrix, own, other, gram, cg_steps, row_regularization)
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
        ``|X|^2 + |Y|^2``, the squared Frobenius norms of both factor matrices; with per-row
        lambdas, ``sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2`` (and ``regularization``
        1).
    regularization : float
        lambda.
    """
    regularized = parts.observed + parts.unobserved + regularization * squared_norms
    return regularized / (parts.confidence + parts.missing)


def training_loss(backend, Cui, X, Y, regularization, row_regularization=None):
    """implicit's normalised training loss of factors ``X`` (rows of ``Cui``) and ``Y``.

    All arguments are device arrays of ``backend``; ``Cui`` holds confidences.
    ``row_regularization``, when given, is a pair of per-row lambda vectors (``X``'s rows,
    ``Y``'s rows) that replaces ``regularization``. With the model options, pass
    ``SolverSettings.confidences`` and its lambdas: the normalised loss of that scaled
    problem is the model's (see ``SolverSettings``).
    """
    parts = backend.loss_parts(Cui, X, Y)
    if row_regularization is None:
        squared_norms = backend.squared_norm(X) + backend.squared_norm(Y)
        return normalised_loss(parts, squared_norms, regularization)
    weights_x, weights_y = row_regularization
    penalty = backend.squared_norm(X, weights_x) + backend.squared_norm(Y, weights_y)
    return normalised_loss(parts, penalty, 1.0)


def run_iterations(
    iterations, half_iteration, loss=None, *, show_progress=True, callback=None, settle=None
):
    """The ALS fit loop, shared by ``AlternatingLeastSquares.fit`` and the Dask fit.

    Each iteration solves ``USERS`` then ``ITEMS``, advances the progress bar, reports the
    training loss on the bar and calls ``callback(iteration, seconds, loss)`` with the
    seconds that iteration took.

    Parameters
    ----------
    iterations : int
        How many iterations.
    half_iteration : callable
        ``half_iteration(iteration, side)`` solves ``side`` given the other side; it raises
        ``ModelFitError`` (from ``solve_side``) when factors stop being finite.
    loss : callable, optional
        Returns the normalised training loss; not called when None (no loss is reported).
    show_progress : bool
        Show a progress bar; while Numba compiles on a first run, the bar says so.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, seconds, loss)``.
    settle : callable, optional
        Called after both halves, before the iteration is timed, for work that runs
        asynchronously (the Dask fit waits for its blocks here).
    """
    current = None
    with tqdm(total=iterations, disable=not show_progress) as bar:
        describe = bar.set_description_str if show_progress else _say_nothing
        with compile_note(describe):
            start = time.perf_counter()
            for iteration in range(iterations):
                for side in SIDES:
                    half_iteration(iteration, side)
                if settle is not None:
                    settle()
                if iteration == 0:
                    describe("")  # compiled by now, if it was
                bar.update(1)
                if loss is not None:
                    current = loss()
                    bar.set_postfix({"loss": f"{current:.6f}"})
                if callback:
                    callback(iteration, time.perf_counter() - start, current)
                start = time.perf_counter()


def _say_nothing(_message):
    pass
