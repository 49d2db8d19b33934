"""``AlternatingLeastSquares``: the implicit-compatible model: parameters, factors, the fit.

The model owns parameters, defaults, its factors and the one fit loop, built from the fit
core (``als.fitting``: settings, initial factors, the half-iteration, the loss) that the Dask
fit shares; input checks are ``als.validation``'s; the numerical work is delegated to a
backend (``backends.base.Backend``) chosen by name. Factors live in backend memory from fit
to recommend; ``user_factors`` and ``item_factors`` read them as NumPy. The model derives its
queries (recommend, similar_*, explain) from ``als.queries`` and its save, load, pickling
and copies from ``als.portable``; what a model file holds is ``als.model_file``'s.
"""

from __future__ import annotations

import threading

import numpy as np

from als.backends.base import Backend, BackendUnavailable, get_backend

from .errors import InvalidValueError, ModelFileError, ModelFitError
from .fitting import (
    ITEMS,
    SIDES,
    USERS,
    SolverSettings,
    initial_factors,
    run_iterations,
    solve_side,
    training_loss,
)
from .model_file import FORMAT_VERSION
from .portable import PortableModelMixin
from .queries import MatrixFactorizationBase
from .validation import (
    check_dtype,
    check_factor_array,
    check_growth,
    check_ids,
    check_positive_int,
    check_random_state,
    check_user_items,
    is_scalar,
)

__all__ = ["AlternatingLeastSquares", "ModelFitError", "ModelFileError", "FORMAT_VERSION"]


#: ids of the models whose ``fit`` is running; a second ``fit`` on one of them is refused
_FITTING = set()
_FITTING_LOCK = threading.Lock()


class AlternatingLeastSquares(MatrixFactorizationBase, PortableModelMixin):
    """Implicit-feedback matrix factorisation by alternating least squares.

    A drop-in replacement for ``implicit.als.AlternatingLeastSquares`` (0.7): the same
    parameters, defaults, methods and return values, and the same factors from the same
    seed, trained by the backend of your choice.

    Parameters
    ----------
    factors : int
        Number of latent factors.
    regularization : float
        L2 regularisation ``lambda`` (>= 0).
    alpha : float
        Confidence scale: ``c_ui = alpha * r_ui``.
    dtype : numpy dtype
        Factor dtype: float32 or float64 (and float16 on the GPU, where the backend allows).
    use_native : bool
        When no backend is named, False selects the plain NumPy reference backend.
    use_cg : bool
        Solve with ``cg_steps`` conjugate-gradient steps; False solves exactly (Cholesky).
    use_gpu : bool or None
        When no backend is named: True requires the GPU, False the CPU, None (default) picks
        the GPU when one is usable.
    iterations : int
        ALS iterations run by ``fit``.
    calculate_training_loss : bool
        Compute the training loss after every iteration (shown in the progress bar).
    num_threads : int
        CPU threads; 0 uses every core.
    random_state : None, int, numpy.random.Generator or numpy.random.RandomState
        Seed for the initial factors, drawn on the host so every backend starts alike.
    backend : {"auto", "cpu", "cuda", "numpy"} or Backend, optional
        The compute backend; overrides ``use_gpu`` and ``use_native``.
    cg_steps : int or None
        Conjugate-gradient steps per row and half-iteration; None solves exactly.
    confidence : {"implicit", "hkv", "log"}
        Opt-in. How a weight ``r`` becomes a confidence ``c``: ``"implicit"`` (default)
        ``alpha * r``; ``"hkv"`` (Hu, Koren, Volinsky) ``1 + alpha * r``; ``"log"``
        ``1 + alpha * log(1 + r / epsilon)``, for play counts. The sign of ``r`` is kept.
    epsilon : float
        Opt-in. The ``epsilon`` (> 0) of the logarithmic confidence.
    alpha0 : float
        Opt-in. The weight (> 0) of an unobserved cell; 1 (default) is implicit's. Stored
        entries weigh their confidence ``c``, so each adds ``(c - alpha0) y y^T`` to the
        Gramian term ``alpha0 Y^T Y``.
    nu : float
        Opt-in. Frequency-scaled regularisation (Rendle, Krichene, Zhang, Koren 2022): a user
        with ``n_u`` entries is regularised by ``lambda * (n_u + alpha0 * n_items) ** nu``
        (items alike, with ``n_users``); 0 (default) is the same ``lambda`` for every row.
    init_stddev : float or None
        Opt-in. None (default) draws implicit's initial factors ``U[0, 1) * 0.01``; a number
        draws normal factors with standard deviation ``init_stddev / sqrt(factors)``.
    solver : {"cg", "ials++"}
        ``"cg"`` (default): implicit's solver, conjugate gradient or exact (``use_cg``).
        ``"ials++"``: one sweep of iALS++ subspace block coordinate descent per
        half-iteration (Rendle et al. 2021), cheaper per iteration at large ``factors``;
        on the CPU backends (and the GPU's array code), not in the Dask fit.
    block_size : int
        Dimensions per iALS++ block (at most ``factors``); ignored by ``"cg"``.

    Attributes
    ----------
    user_factors, item_factors : numpy.ndarray
        Learned factors, one row per user / item (None before ``fit``).

    Notes
    -----
    With the opt-in options the model minimises ``sum_stored c (p - x_u.y_i)^2 + alpha0
    sum_unobserved (x_u.y_i)^2 + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2``; the
    reported training loss is this, normalised by ``sum_stored c + alpha0 * unobserved
    cells`` (implicit's normalisation when the options are at their defaults). The defaults
    give implicit's model and factors. ``fit_distributed`` supports the defaults and ``nu``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from als import AlternatingLeastSquares
    >>> user_items = sp.csr_matrix(np.eye(4, dtype=np.float32))
    >>> model = AlternatingLeastSquares(factors=2, iterations=3, random_state=0, backend="numpy")
    >>> model = model.fit(user_items, show_progress=False)
    >>> model.user_factors.shape
    (4, 2)
    """

    def __init__(
        self,
        factors=100,
        regularization=0.01,
        alpha=1.0,
        dtype=np.float32,
        use_native=True,
        use_cg=True,
        use_gpu=None,
        iterations=15,
        calculate_training_loss=False,
        num_threads=0,
        random_state=None,
        backend=None,
        cg_steps=3,
        confidence="implicit",
        epsilon=1.0,
        alpha0=1.0,
        nu=0.0,
        init_stddev=None,
        solver="cg",
        block_size=32,
    ):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.dtype = dtype
        self.use_native = use_native
        self.use_cg = use_cg
        self.use_gpu = use_gpu
        self.iterations = iterations
        self.calculate_training_loss = calculate_training_loss
        self.num_threads = num_threads
        self.random_state = random_state
        self.backend = backend
        self.cg_steps = cg_steps
        self.confidence = confidence
        self.epsilon = epsilon
        self.alpha0 = alpha0
        self.nu = nu
        self.init_stddev = init_stddev
        self.solver = solver
        self.block_size = block_size
        #: implicit's older way of passing ``callback`` to fit
        self.fit_callback = None
        self._backend = None
        self._user_factors = None
        self._item_factors = None
        self._clear_caches()

    def __repr__(self):
        # never resolves the backend: that can import CuPy, compile kernels or raise
        backend = self.backend if self._backend is None else self._backend.name
        if isinstance(backend, Backend) and not isinstance(backend, str):
            backend = backend.name
        return (
            f"{type(self).__name__}(factors={self.factors}, regularization={self.regularization}"
            f", alpha={self.alpha}, iterations={self.iterations}, backend={backend!r})"
        )

    # -- backend and learned state ------------------------------------------------------------

    @property
    def backend_(self) -> Backend:
        """The backend instance the model computes with, resolved on first use.

        Until then (a new model, or one just unpickled) the factors, if any, are NumPy
        arrays; resolving the backend moves them into its memory.
        """
        if self._backend is None:
            try:
                backend = self._resolve_backend()
            except BackendUnavailable as exc:
                if self._user_factors is None and self._item_factors is None:
                    raise
                raise BackendUnavailable(
                    f"{exc}; model.to_cpu() returns a copy of this model that runs without it"
                ) from exc
            # factors first, the backend last: whoever sees the backend sees device factors
            for attribute in ("_user_factors", "_item_factors"):
                factors = getattr(self, attribute)
                if isinstance(factors, np.ndarray):
                    setattr(self, attribute, backend.to_device(factors))
            self._backend = backend
        return self._backend

    @property
    def backend_name(self):
        """Name of the backend in use (resolving it if needed)."""
        return self.backend_.name

    def _resolve_backend(self):
        threads = check_positive_int(self.num_threads, "num_threads", minimum=0)
        if isinstance(self.backend, Backend) and not isinstance(self.backend, str):
            return self.backend
        if self.backend is not None:
            if self.use_gpu is not None and (self.backend == "cuda") != bool(self.use_gpu):
                raise InvalidValueError(
                    f"use_gpu={self.use_gpu} contradicts backend={self.backend!r}: set one"
                )
            return get_backend(self.backend, threads)
        if self.use_gpu:
            return get_backend("cuda", threads)
        cpu = "cpu" if self.use_native else "numpy"
        if self.use_gpu is None:
            try:
                return get_backend("cuda", threads)
            except BackendUnavailable:
                pass
        return get_backend(cpu, threads)

    def _host(self, factors):
        """``factors`` as NumPy; before the backend is resolved they already are."""
        if factors is None or self._backend is None:
            return factors
        return self._backend.to_host(factors)

    def _factor_property(name, what):  # runs in the class body, deleted after use
        """The public ``name`` factors: NumPy out, checked and copied to the backend in."""

        def get(self):
            return self._host(getattr(self, "_" + name))

        def set_(self, value):
            setattr(self, "_" + name, self._to_factors(value, name))
            self._clear_caches()

        doc = f"{what} factors as a NumPy array (a view of backend memory on the CPU backends)."
        return property(get, set_, doc=doc)

    user_factors = _factor_property("user_factors", "User")
    item_factors = _factor_property("item_factors", "Item")
    del _factor_property

    def _to_factors(self, value, name):
        if value is None:
            return None
        if not isinstance(value, np.ndarray):
            value = self.backend_.to_host(value)
        # a copy: fitting updates factors in place and must not touch the caller's array
        array = check_factor_array(value, name, self._dtype())
        return self.backend_.to_device(array.copy() if array is value else array)

    def _dtype(self):
        return check_dtype(self.dtype)

    def _factors(self, side):
        """The device factors of ``side`` (``fitting.USERS`` or ``fitting.ITEMS``)."""
        return getattr(self, f"_{side.factors_name}")

    def _set_factors(self, side, factors):
        setattr(self, f"_{side.factors_name}", factors)

    # -- training -----------------------------------------------------------------------------

    def solver_settings(self):
        """The checked parameters of a fit (``als.fitting.SolverSettings``).

        Raises
        ------
        TypeError, ValueError
            For a bad parameter (the message names which), or a ``dtype`` the backend
            cannot train with.
        """
        return SolverSettings.from_model(self, self.backend_)

    def fit(self, user_items, show_progress=True, callback=None):
        """Factorise ``user_items`` into user and item factors.

        Factors already present with the right shapes (from an earlier fit or set by hand)
        are the starting point, as in implicit; otherwise they are drawn from
        ``random_state``.

        Parameters
        ----------
        user_items : scipy.sparse.csr_matrix, shape (n_users, n_items)
            Weights of the interactions. Positive weights are liked items with confidence
            ``alpha * weight``; negative weights are disliked items with confidence
            ``alpha * |weight|``.
        show_progress : bool
            Show a progress bar (with the loss when ``calculate_training_loss``).
        callback : callable, optional
            Called after every iteration as ``callback(iteration, seconds, loss)``.

        Returns
        -------
        AlternatingLeastSquares
            ``self``.

        Raises
        ------
        TypeError, ValueError
            For bad parameters or input (the message names which).
        ModelFitError
            When the factors stop being finite.
        """
        with _FITTING_LOCK:
            if id(self) in _FITTING:
                raise RuntimeError(
                    "fit is already running on this model (in another thread): wait for it, "
                    "or fit a copy"
                )
            _FITTING.add(id(self))
        try:
            return self._fit(user_items, show_progress, callback)
        finally:
            with _FITTING_LOCK:
                _FITTING.discard(id(self))

    def _fit(self, user_items, show_progress, callback):
        settings = self.solver_settings()
        backend = self.backend_
        Cui = settings.confidences(check_user_items(user_items, require_entries=True))
        self._init_or_check_factors(Cui.shape, settings)

        # one confidence matrix per side: its rows are that side's rows
        host = {USERS: Cui, ITEMS: Cui.T.tocsr()}
        matrices = {side: backend.to_device(matrix) for side, matrix in host.items()}
        # per-row lambdas (frequency-scaled regularisation), or None
        lambdas = {side: settings.row_regularization(matrix) for side, matrix in host.items()}
        lambdas = {s: None if v is None else backend.to_device(v) for s, v in lambdas.items()}
        self._clear_caches()

        def half_iteration(iteration, side):
            self._half_iteration(matrices[side], side, settings, iteration, lambdas[side])

        def loss():
            return training_loss(
                backend,
                matrices[USERS],
                self._user_factors,
                self._item_factors,
                settings.loss_regularization,
                None if settings.nu == 0.0 else (lambdas[USERS], lambdas[ITEMS]),
            )

        with backend.threads():
            run_iterations(
                settings.iterations,
                half_iteration,
                loss if settings.calculate_training_loss else None,
                show_progress=show_progress,
                callback=callback or self.fit_callback,
            )
        self._clear_caches()
        return self

    def _half_iteration(self, matrix, side, settings, iteration, row_regularization=None):
        """Solve ``side``'s factors given the other side's: one half of an iteration."""
        other = self._factors(side.other)
        gram = self.backend_.gram(other, settings.gram_regularization)
        try:
            own = self._factors(side)
            solve_side(
                self.backend_,
                matrix,
                own,
                other,
                gram,
                settings.cg_steps,
                iteration,
                side,
                row_regularization,
                block_size=settings.block_size,
            )
        except ModelFitError:
            # never leave NaN factors behind to be served as recommendations
            self._user_factors = self._item_factors = None
            self._clear_caches()
            raise

    def _init_or_check_factors(self, shape, settings):
        rng = None
        for side, rows in zip(SIDES, shape, strict=True):
            current = self._factors(side)
            if current is None:
                rng = rng or check_random_state(self.random_state)
                drawn = initial_factors(
                    rng, rows, settings.factors, settings.dtype, settings.init_stddev
                )
                self._set_factors(side, self.backend_.to_device(drawn))
            elif current.shape != (rows, settings.factors):
                raise InvalidValueError(
                    f"user_items has shape {tuple(shape)} but the model already has "
                    f"{side.factors_name} of shape {tuple(current.shape)}; fit a new model or "
                    f"set {side.factors_name} = None to start again"
                )
            elif current.dtype != settings.dtype:
                self._set_factors(side, current.astype(settings.dtype))

    # -- updating factors for some rows ---------------------------------------------------------

    def _recalculate(self, ids, matrix, side):
        """Exact factors (device array) for the rows of ``matrix`` against the other side."""
        self._require_fit()
        fixed = self._factors(side.other)
        count = 1 if is_scalar(ids) else len(np.asarray(ids))
        # narrower than the model: the missing columns are users/items without interactions
        matrix = check_user_items(
            matrix, side.matrix_name, rows=count, columns=len(fixed), widen=True
        )
        settings = self.solver_settings()
        matrix = settings.confidences(matrix)
        lambdas = settings.row_regularization(matrix)
        backend = self.backend_
        rows = backend.to_device(np.zeros((count, self.factors), dtype=self._dtype()))
        with backend.threads():
            gram = self._gram(side.other)
            if lambdas is None:
                backend.solve(backend.to_device(matrix), rows, fixed, gram, None)
            else:
                lambdas = backend.to_device(lambdas)
                backend.solve(backend.to_device(matrix), rows, fixed, gram, None, lambdas)
        if not backend.all_finite(rows):
            raise ModelFitError(
                f"the recalculated {side.singular} factors are NaN or infinite: the weights in "
                f"{side.matrix_name} are too large for {self._dtype().name} (lower alpha or the "
                "weights, raise regularization or use float64)"
            )
        return rows

    def recalculate_user(self, userid, user_items):
        """Compute factors for users from their interactions without storing them.

        Parameters
        ----------
        userid : int or array_like of int
            The user(s); only their count matters, the factors are computed from scratch.
        user_items : csr_matrix, shape (n_users_in_userid, n_items)
            One row of interactions per user in ``userid``. It may have fewer columns than
            the model has items (the missing ones are items without interactions), not more.

        Returns
        -------
        numpy.ndarray
            Shape (factors,) for a scalar ``userid``, else (len(userid), factors).
        """
        factors = self.backend_.to_host(self._recalculate(userid, user_items, USERS))
        return factors[0] if is_scalar(userid) else factors

    def recalculate_item(self, itemid, item_users):
        """Compute factors for items from their interactions without storing them.

        ``item_users`` has one row per item in ``itemid`` and one column per user (or
        fewer: the missing columns are users without interactions).
        """
        factors = self.backend_.to_host(self._recalculate(itemid, item_users, ITEMS))
        return factors[0] if is_scalar(itemid) else factors

    def partial_fit_users(self, userids, user_items):
        """Recompute and store factors for ``userids``, growing the model for new users."""
        self._partial_fit(userids, user_items, USERS)

    def partial_fit_items(self, itemids, item_users):
        """Recompute and store factors for ``itemids``, growing the model for new items."""
        self._partial_fit(itemids, item_users, ITEMS)

    def _partial_fit(self, ids, matrix, side):
        if id(self) in _FITTING:
            raise RuntimeError(
                "fit is running on this model (in another thread): partial_fit would mix "
                "into it; wait for it to finish"
            )
        ids = check_ids(ids, side.ids_name, np.iinfo(np.int64).max, allow_scalar=False)
        self._require_fit()
        check_growth(ids, len(self._factors(side)), side.ids_name, side.name)
        new = self._recalculate(ids, matrix, side)
        factors = self._factors(side)
        if len(ids) and ids.max() >= len(factors):
            grown = np.zeros((int(ids.max()) + 1, self.factors), dtype=self._dtype())
            grown[: len(factors)] = self.backend_.to_host(factors)
            factors = self.backend_.to_device(grown)
            self._set_factors(side, factors)
        factors[self.backend_.to_device(ids)] = new
        self._clear_caches()
