"""``AlternatingLeastSquares``: the implicit-compatible model, its fit loop and its queries.

The model owns parameters, defaults and the one fit loop, built from the fit core
(``als.fitting``: settings, initial factors, the half-iteration, the loss) that the Dask fit
shares; input checks are ``als.validation``'s; the numerical work is delegated to a backend
(``backends.base.Backend``) chosen by name. Factors live in backend
memory from fit to recommend; ``user_factors`` and ``item_factors`` read them as NumPy.
"""

from __future__ import annotations

import inspect
import numbers
import threading
import warnings

import numpy as np
import scipy.linalg
import scipy.sparse

from als.backends.base import Backend, BackendUnavailable, check_int32_ids, get_backend

from .errors import InvalidValueError, ModelFileError, ModelFitError, ParameterWarning
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
from .persistence import read_npz, write_npz
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

#: version of the files written by ``save``; files written by implicit 0.7 have none
FORMAT_VERSION = 1

_SAVED_PARAMS = (
    "factors",
    "regularization",
    "alpha",
    "use_native",
    "use_cg",
    "iterations",
    "calculate_training_loss",
    "num_threads",
    "cg_steps",
    "confidence",
    "epsilon",
    "alpha0",
    "nu",
    "init_stddev",
    "solver",
    "block_size",
)


#: ids of the models whose ``fit`` is running; a second ``fit`` on one of them is refused
_FITTING = set()
_FITTING_LOCK = threading.Lock()


class AlternatingLeastSquares:
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

    Notes
    -----
    With the opt-in options the model minimises ``sum_stored c (p - x_u.y_i)^2 + alpha0
    sum_unobserved (x_u.y_i)^2 + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2``; the
    reported training loss is this, normalised by ``sum_stored c + alpha0 * unobserved
    cells`` (implicit's normalisation when the options are at their defaults). The defaults
    give implicit's model and factors. ``fit_distributed`` supports the defaults only.
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

    @property
    def user_factors(self):
        """User factors as a NumPy array (a view of backend memory on the CPU backends)."""
        return self._host(self._user_factors)

    @user_factors.setter
    def user_factors(self, value):
        self._user_factors = self._to_factors(value, "user_factors")
        self._clear_caches()

    @property
    def item_factors(self):
        """Item factors as a NumPy array (a view of backend memory on the CPU backends)."""
        return self._host(self._item_factors)

    @item_factors.setter
    def item_factors(self, value):
        self._item_factors = self._to_factors(value, "item_factors")
        self._clear_caches()

    def _to_factors(self, value, name):
        if value is None:
            return None
        if not isinstance(value, np.ndarray):
            value = self.backend_.to_host(value)
        # a copy: fitting updates factors in place and must not touch the caller's array
        array = check_factor_array(value, name, self._dtype())
        return self.backend_.to_device(array.copy() if array is value else array)

    def _clear_caches(self):
        self._gram_cache = {}
        self._norm_cache = {}
        self._unit_cache = {}

    def _dtype(self):
        return check_dtype(self.dtype)

    def _factors(self, side):
        """The device factors of ``side`` (``fitting.USERS`` or ``fitting.ITEMS``)."""
        return getattr(self, f"_{side.factors_name}")

    def _set_factors(self, side, factors):
        setattr(self, f"_{side.factors_name}", factors)

    def _gram(self, side):
        """``F^T F + lambda I`` of ``side``'s factors, cached (lambda as the model options
        scale it: ``lambda / alpha0``, or 0 when lambda is per row)."""
        settings = self.solver_settings()
        regularization = 0.0 if settings.nu else settings.regularization / settings.alpha0
        key = (side.name, regularization)
        if key not in self._gram_cache:
            self._gram_cache[key] = self.backend_.gram(self._factors(side), regularization)
        return self._gram_cache[key]

    def _norms(self, side):
        if side.name not in self._norm_cache:
            self._norm_cache[side.name] = self.backend_.norms(self._factors(side))
        return self._norm_cache[side.name]

    def _unit_factors(self, side):
        """``side``'s factors divided by their norms, cached: cosine similarity is then a
        plain top-k of dot products, with no division per score (implicit divides each score
        by the candidate's norm and then by the query's)."""
        if side.name not in self._unit_cache:
            self._unit_cache[side.name] = self._unit(self._factors(side), self._norms(side))
        return self._unit_cache[side.name]

    def _unit(self, factors, norms):
        """``factors / norms``, row by row; refused when a norm overflowed the dtype."""
        if not self.backend_.all_finite(norms):
            raise ModelFitError(
                "a norm is NaN or infinite: the factors are too large for "
                f"{factors.dtype.name} (refit with more regularization, or use float64)"
            )
        return factors / norms[:, None]

    @property
    def YtY(self):
        """``Y^T Y`` of the item factors, as NumPy (implicit's attribute of that name)."""
        self._require_fit()
        return self.backend_.to_host(self.backend_.gram(self._item_factors, 0.0))

    @property
    def XtX(self):
        """``X^T X`` of the user factors, as NumPy (implicit's attribute of that name)."""
        self._require_fit()
        return self.backend_.to_host(self.backend_.gram(self._user_factors, 0.0))

    @property
    def user_norms(self):
        """Norms of the user factors (zero norms replaced by 1e-10)."""
        return self._require_fit().to_host(self._norms(USERS))

    @property
    def item_norms(self):
        """Norms of the item factors (zero norms replaced by 1e-10)."""
        return self._require_fit().to_host(self._norms(ITEMS))

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

    # -- queries ------------------------------------------------------------------------------

    def _require_fit(self):
        """Refuse a model without factors; otherwise make sure they are on the backend."""
        if self._user_factors is None or self._item_factors is None:
            raise InvalidValueError("the model has no factors yet: call fit (or load) first")
        return self.backend_

    def recommend(
        self,
        userid,
        user_items,
        N=10,
        filter_already_liked_items=True,
        filter_items=None,
        recalculate_user=False,
        items=None,
    ):
        """Recommend items for one user or a batch of users.

        Parameters
        ----------
        userid : int or array_like of int
            The user(s) to recommend for.
        user_items : csr_matrix, shape (n_users_in_userid, n_items)
            Each user's interactions, one row per user in ``userid``: their liked items are
            filtered out and, with ``recalculate_user``, their factors computed from it.
            May be None when neither is asked for, and may have fewer columns than the model
            has items (items added later by ``partial_fit_items``).
        N : int
            Number of recommendations per user.
        filter_already_liked_items : bool
            Never recommend an item the user has in ``user_items``.
        filter_items : array_like of int, optional
            Items never to recommend.
        recalculate_user : bool
            Compute the users' factors from ``user_items`` instead of the stored ones.
        items : array_like of int, optional
            Rank only these items, as implicit does: every one of them is returned (up to
            ``N``; an id given twice once), best first, and the user's liked items, when
            filtered, come last with score -inf. Cannot be combined with a non-empty
            ``filter_items``.

        Returns
        -------
        ids, scores : numpy.ndarray
            For a scalar ``userid``, 1-D arrays of at most ``N`` items, best first: filtered
            and liked items are left out, never returned with a sentinel score (except
            liked items of an ``items`` list, see above). For a batch, 2-D arrays of
            ``min(N, candidates)`` columns; a user with fewer candidates than that gets id
            -1 and score -inf in the remaining places.

        Raises
        ------
        IdOutOfRangeError
            (a ValueError and an IndexError) for a user or item id the model does not have.
        """
        self._require_fit()
        N = check_positive_int(N, "N")
        n_users, n_items = len(self._user_factors), len(self._item_factors)
        scalar = is_scalar(userid)
        count = 1 if scalar else len(np.atleast_1d(userid))
        liked = None
        rows = getattr(user_items, "shape", (count,))[0]
        if scalar and rows > 1 and (filter_already_liked_items or recalculate_user):
            raise InvalidValueError(
                f"user_items has {rows} rows but userid is one user: pass that user's row, "
                "recommend(userid, user_items[userid]), not the whole matrix (implicit 0.4 style)."
            )
        if filter_already_liked_items or recalculate_user:
            liked = check_user_items(
                user_items, "user_items", rows=count, columns=n_items, widen=True
            )
        if recalculate_user:
            queries = self._recalculate(userid, user_items, USERS)
        else:
            ids = check_ids(userid, "userid", n_users)
            queries = self._user_factors[self.backend_.to_device(np.atleast_1d(ids))]
        exclude = liked if filter_already_liked_items else None
        ids, scores = self._rank(queries, ITEMS, N, exclude, filter_items, items, "items")
        return (ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]) if scalar else (ids, scores)

    def _rank(self, queries, side, N, exclude, filter_ids, subset, subset_name, factors=None):
        """Top ``N`` of ``side``'s ``factors`` (by default its factors) for ``queries``,
        restricted and filtered."""
        factors = self._factors(side) if factors is None else factors
        total = len(factors)
        filter_name = f"filter_{side.name}"
        if subset is not None and filter_ids is not None:
            if len(np.atleast_1d(filter_ids)):
                raise InvalidValueError(
                    f"{subset_name} and {filter_name} cannot be combined: pick one"
                )
            filter_ids = None
        exclude_all = None
        liked_last = None
        if filter_ids is not None:
            exclude_all = self.backend_.to_device(
                check_ids(filter_ids, filter_name, total, allow_scalar=False)
            )
        if subset is not None:
            subset = np.unique(check_ids(subset, subset_name, total, allow_scalar=False))
            device_subset = self.backend_.to_device(subset)
            factors = factors[device_subset]
            if exclude is not None:
                exclude = liked_last = _restrict_columns(exclude, subset)
        candidates = len(factors)
        k = min(N, candidates)
        if k == 0:
            empty = np.empty((len(queries), 0))
            return empty.astype(np.int32), empty.astype(self._dtype())
        if exclude is not None:
            exclude = self.backend_.to_device(exclude)
        with self.backend_.threads():
            ids, scores = self.backend_.topk(queries, factors, k, exclude, exclude_all)
        _check_scores(scores, ids)
        if liked_last is not None:
            ids, scores = _liked_last(ids, scores, liked_last)
        if subset is not None:
            check_int32_ids(total, filter_name[7:])
            ids = np.where(ids >= 0, subset[np.maximum(ids, 0)], -1).astype(np.int32)
        return ids, scores

    def similar_items(
        self, itemid, N=10, recalculate_item=False, item_users=None, filter_items=None, items=None
    ):
        """Items most similar to ``itemid`` by cosine similarity of their factors.

        Parameters
        ----------
        itemid : int or array_like of int
            The item(s) to find neighbours of (the item itself is included, as in implicit).
        N : int
            Number of similar items.
        recalculate_item : bool
            Compute the query items' factors from ``item_users`` instead.
        item_users : csr_matrix, optional
            One row of user interactions per query item, with ``recalculate_item``.
        filter_items : array_like of int, optional
            Items never to return.
        items : array_like of int, optional
            Only rank these items.

        Returns
        -------
        ids, scores : numpy.ndarray
            As ``recommend``: best first, cosine similarities as scores.
        """
        return self._similar(itemid, N, recalculate_item, item_users, filter_items, items, ITEMS)

    def similar_users(self, userid, N=10, filter_users=None, users=None):
        """Users most similar to ``userid`` by cosine similarity (as ``similar_items``)."""
        return self._similar(userid, N, False, None, filter_users, users, USERS)

    def _similar(self, queryid, N, recalculate, matrix, filter_ids, subset, side):
        self._require_fit()
        N = check_positive_int(N, "N")
        scalar = is_scalar(queryid)
        if recalculate:
            queries = self._recalculate(queryid, matrix, side)
            queries = self._unit(queries, self.backend_.norms(queries))
            unit = self._unit_factors(side)
        else:
            ids = check_ids(queryid, f"{side.singular}id", len(self._factors(side)))
            unit = self._unit_factors(side)
            queries = unit[self.backend_.to_device(np.atleast_1d(ids))]
        ids, scores = self._rank(queries, side, N, None, filter_ids, subset, side.name, unit)
        return (ids[0][ids[0] >= 0], scores[0][ids[0] >= 0]) if scalar else (ids, scores)

    def explain(self, userid, user_items, itemid, user_weights=None, N=10):
        """Explain a user's score for an item as contributions of the items they liked.

        Follows section 5 of Hu, Koren, Volinsky (2008), as implicit does.

        Parameters
        ----------
        userid : int
            The user; their row of ``user_items`` is used.
        user_items : csr_matrix
            Either the full users x items matrix, or a single row for this user.
        itemid : int
            The item whose score is explained.
        user_weights : tuple, optional
            The Cholesky factor returned by an earlier call for the same user.
        N : int
            Number of top contributions to return.

        Returns
        -------
        total_score : float
            The user's predicted score for ``itemid``.
        top_contributions : list of (itemid, score)
            The ``N`` liked items contributing most, largest first.
        user_weights : tuple
            The user's Cholesky factor, to pass to later calls.
        """
        self._require_fit()
        N = check_positive_int(N, "N")
        item_factors = self.item_factors
        itemid = check_ids(itemid, "itemid", len(item_factors))
        shape = getattr(user_items, "shape", None)
        if shape is not None and len(shape) == 2 and shape[0] == len(item_factors) != shape[1]:
            raise InvalidValueError(
                f"user_items has shape {shape}, items x users: explain takes users x items, "
                "explain(userid, user_items, itemid), not item_users (implicit 0.4 style)."
            )
        user_items = check_user_items(
            user_items, "user_items", columns=len(item_factors), widen=True
        )
        row = 0 if user_items.shape[0] == 1 else check_ids(userid, "userid", user_items.shape[0])
        settings = self.solver_settings()
        row = settings.confidences(user_items[row])
        # implicit skips disliked (negative) entries; a stored zero contributes zero
        liked = row.indices[row.data >= 0]
        liked_confidence = row.data[row.data >= 0].astype(np.float64)
        if user_weights is None:
            Y = item_factors[row.indices].astype(np.float64)
            A = self.backend_.to_host(self._gram(ITEMS)).astype(np.float64)
            A += (Y.T * (np.abs(row.data) - 1)) @ Y
            lambdas = settings.row_regularization(row)
            if lambdas is not None:
                A += np.float64(lambdas[0]) * np.eye(len(A))
            user_weights = scipy.linalg.cho_factor(A)
        weighted_item = scipy.linalg.cho_solve(user_weights, item_factors[itemid])
        scores = (item_factors[liked] @ weighted_item) * liked_confidence
        with np.errstate(over="ignore"):
            total = float(scores.sum())
        if not (np.isfinite(total) and np.isfinite(scores).all()):
            raise ModelFitError(
                "the explanation's scores are NaN or infinite: the weights in user_items are "
                "too large for the factors (lower alpha or the weights)"
            )
        order = np.lexsort((liked, -scores))[:N]
        contributions = [(int(liked[i]), float(scores[i])) for i in order]
        return total, contributions, user_weights

    def rank_items(self, userid, user_items, selected_items, recalculate_user=False):
        """Deprecated in implicit: ``recommend(..., items=selected_items)`` without filtering."""
        warnings.warn(
            "rank_items is deprecated. Use recommend with the 'items' parameter instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.recommend(
            userid,
            user_items,
            recalculate_user=recalculate_user,
            items=selected_items,
            filter_already_liked_items=False,
        )

    def recommend_all(
        self,
        user_items,
        N=10,
        recalculate_user=False,
        filter_already_liked_items=True,
        filter_items=None,
        users_items_offset=0,
    ):
        """Deprecated in implicit: ids of ``recommend`` for every row of ``user_items``.

        Row ``r`` of ``user_items`` is user ``r + users_items_offset``.
        """
        warnings.warn(
            "recommend_all is deprecated. Use recommend with an array of userids instead",
            DeprecationWarning,
            stacklevel=2,
        )
        offset = check_positive_int(users_items_offset, "users_items_offset", minimum=0)
        userids = np.arange(user_items.shape[0]) + offset
        ids, _ = self.recommend(
            userids,
            user_items,
            N=N,
            filter_already_liked_items=filter_already_liked_items,
            filter_items=filter_items,
            recalculate_user=recalculate_user,
        )
        return ids

    # -- moving and persisting ----------------------------------------------------------------

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
        self._user_factors = state["user_factors"]
        self._item_factors = state["item_factors"]

    def _copy_to(self, backend):
        model = type(self)(
            **{name: getattr(self, name) for name in _SAVED_PARAMS},
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

        Parameters
        ----------
        fileobj_or_path : str, os.PathLike or file object
        extra : dict of str to ndarray, optional
            More arrays to store beside the model (e.g. id maps); read them back with
            ``load(..., return_extra=True)``.
        """
        arrays = {name: getattr(self, name) for name in _SAVED_PARAMS}
        arrays["cg_steps"] = -1 if self.cg_steps is None else self.cg_steps
        arrays["dtype"] = self._dtype().name
        arrays["user_factors"] = self.user_factors
        arrays["item_factors"] = self.item_factors
        arrays["format_version"] = FORMAT_VERSION
        params = self._params()
        arrays["backend"] = params["backend"]
        arrays["use_gpu"] = None if self.use_gpu is None else bool(self.use_gpu)
        if isinstance(self.random_state, numbers.Integral):
            arrays["random_state"] = self.random_state
        for key, value in (extra or {}).items():
            arrays[f"extra/{key}"] = np.asarray(value)
            if arrays[f"extra/{key}"].dtype.hasobject:
                raise TypeError(
                    f"extra[{key!r}] holds Python objects: model files never contain pickles; "
                    "give numbers or strings"
                )
        arrays = {key: value for key, value in arrays.items() if value is not None}
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
        _check_model_arrays(arrays, fileobj_or_path)
        params = {name: arrays[name].item() for name in _SAVED_PARAMS if name in arrays}
        if params.get("cg_steps") == -1:
            params["cg_steps"] = None
        if "random_state" in arrays:
            params["random_state"] = arrays["random_state"].item()
        if "use_gpu" in arrays:
            params["use_gpu"] = bool(arrays["use_gpu"].item())
        if "backend" in arrays:
            params["backend"] = str(arrays["backend"].item())
        if backend is not None:
            params.update(backend=backend, use_gpu=None)
        model = cls(**params, dtype=np.dtype(str(arrays.get("dtype", "float32"))))
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
            for key in ("user_factors", "item_factors"):
                # popped, not copied: the file's arrays become the model's (peak memory ~1x)
                try:
                    factors = check_factor_array(arrays.pop(key), key, model._dtype())
                except ValueError as exc:
                    raise ModelFileError(f"{fileobj_or_path} is corrupted: {exc}") from exc
                setattr(model, f"_{key}", backend_.to_device(factors))
            model._clear_caches()
        if not return_extra:
            return model
        extra = {key[6:]: value for key, value in arrays.items() if key.startswith("extra/")}
        return model, extra


def _check_model_arrays(arrays, name):
    """Refuse model arrays that are missing, too new, out of range or inconsistent."""
    for key in _SAVED_PARAMS + ("dtype", "random_state", "format_version", "backend", "use_gpu"):
        if key in arrays and arrays[key].shape != ():
            raise ModelFileError(f"{name} is corrupted: {key!r} should be a single value")
    for key, (kinds, valid, rule) in _PARAM_RULES.items():
        if key in arrays and not _valid_param(arrays[key].item(), kinds, valid):
            raise ModelFileError(
                f"{name} is corrupted: {key} is {arrays[key].item()!r}, not {rule}"
            )
    version = int(arrays["format_version"]) if "format_version" in arrays else 0
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
        try:
            dtype = np.dtype(str(arrays["dtype"]))
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind != "f" or dtype.itemsize > 8:
            raise ModelFileError(
                f"{name} is corrupted: dtype is {str(arrays['dtype'])!r}, not a float dtype"
            )
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
    # both factor arrays or neither (checked above)
    users, items = arrays.get("user_factors"), arrays.get("item_factors")
    if users is not None and users.dtype != items.dtype:
        raise ModelFileError(
            f"{name} is corrupted: user_factors are {users.dtype} but item_factors {items.dtype}"
        )


def _valid_param(value, kinds, valid):
    if bool in kinds:
        return isinstance(value, bool) or (type(value) is int and value in (0, 1))
    return isinstance(value, kinds) and not isinstance(value, bool) and bool(valid(value))


#: what a saved parameter may be: (Python types, check, the rule in words)
_PARAM_RULES = {
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


def _check_scores(scores, ids):
    """Refuse to answer with a score that is not finite (the places padded with -1 aside)."""
    if not np.isfinite(scores[ids >= 0]).all():
        raise ModelFitError(
            "a score is NaN or infinite: the factors are too large for "
            f"{scores.dtype.name} (refit with more regularization, or use float64)"
        )


def _liked_last(ids, scores, liked):
    """Fill the places ``topk`` left empty (id -1) with each row's liked items, score -inf.

    implicit ranks an ``items=`` list whole, the liked (filtered) ones last. Empty places
    are at the end of a row, and a row has at least as many liked candidates as empty
    places (candidates = unliked + liked >= k). Liked items come in id order.
    """
    empty = ids < 0
    counts = empty.sum(axis=1)
    if not counts.any():
        return ids, scores
    ids, scores = ids.copy(), scores.copy()
    liked = liked.tocsr()
    liked.sort_indices()
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ids[empty] = liked.indices[np.repeat(liked.indptr[:-1], counts) + offsets]
    scores[empty] = -np.inf
    return ids, scores


def _restrict_columns(matrix, subset):
    """Keep the entries of ``matrix`` whose column is in sorted ``subset``, renumbered."""
    coo = matrix.tocoo()
    position = np.clip(np.searchsorted(subset, coo.col), 0, len(subset) - 1)
    keep = subset[position] == coo.col
    return scipy.sparse.csr_matrix(
        (coo.data[keep], (coo.row[keep], position[keep])), shape=(matrix.shape[0], len(subset))
    )
