"""``fit_distributed``: the model's fit loop over factor blocks held in futures on the workers.

:class:`BlockedFit` holds, per side, the futures of one fit (solver blocks, lambdas, factor
blocks, Gram partials) and runs its half-iterations as tasks on the blocks' owners;
``als.fitting.run_iterations`` drives it exactly as it drives ``AlternatingLeastSquares.fit``
(progress bar, loss, callback). See docs/distributed.md for what travels.
"""

from __future__ import annotations

import numpy as np

from als.backends.base import get_backend

from ..errors import InvalidTypeError, InvalidValueError
from ..fitting import (
    ITEMS,
    SIDES,
    USERS,
    SolverSettings,
    add_loss_parts,
    normalised_loss,
    run_iterations,
)
from ..model import AlternatingLeastSquares
from .initial import starting_factors
from .intake import BlockedInteractions, partition_interactions
from .placement import Placement
from .tasks import (
    block_loss,
    finish_gram,
    gram_partial,
    ids_in_range,
    routed_rows,
    row_lambdas,
    solve_block,
    solver_block,
    squared_norm,
    sum_pair,
)

__all__ = ["BlockedFit", "fit_distributed"]


def fit_distributed(client, model, user_items, *, show_progress=True, callback=None, **options):
    """Fit ``model`` on a Dask cluster and return it, with its factors gathered.

    The model's parameters mean what they mean in ``model.fit`` and are checked by the
    same code; the workers solve with the ``cpu`` backend whatever ``model.backend`` is,
    and the gathered factors are put on the model's backend. Factors the model already has
    with the right shapes are the starting point, as in ``fit``; each block of them goes to
    its owner inside its task. Each half-iteration a block receives only the other side's
    rows it references (see docs/distributed.md).

    Parameters
    ----------
    client : distributed.Client
    model : AlternatingLeastSquares
        Parameters of the fit; receives the factors.
    user_items : scipy.sparse matrix, dask DataFrame, Parquet path(s) or BlockedInteractions
        The interactions (see :func:`als.distributed.partition_interactions`), or blocks
        already on the workers.
    show_progress : bool
        Show a progress bar.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, seconds, loss)``.
    **options
        ``shape``, ``blocks``, ``user_col``, ``item_col``, ``weight_col``, ``layout``:
        passed to :func:`als.distributed.partition_interactions` (unused for
        ``BlockedInteractions``).

    Returns
    -------
    AlternatingLeastSquares
        ``model``, fitted.

    Raises
    ------
    TypeError, ValueError
        For bad parameters or input.
    ModelFitError
        When the factors stop being finite.
    """
    settings = _checked_settings(model)
    owned = not isinstance(user_items, BlockedInteractions)
    if owned:
        user_items = partition_interactions(client, user_items, **options)
    fit = BlockedFit(client, user_items, settings, model)
    if owned:
        # the solver blocks replace the weights: the workers free them once those are
        # built, and the scheduler keeps their lineage in case a worker is lost
        user_items.user_blocks = user_items.item_blocks = None
    run_iterations(
        settings.iterations,
        fit.half_iteration,
        fit.loss if settings.calculate_training_loss else None,
        show_progress=show_progress,
        callback=callback or model.fit_callback,
        settle=fit.settle,
    )
    for side in SIDES:
        setattr(model, side.factors_name, fit.gathered(side))
    return model


def _checked_settings(model):
    """The model's settings for the workers' ``cpu`` backend, refusing what is not built."""
    if not isinstance(model, AlternatingLeastSquares):
        raise InvalidTypeError(
            f"model must be an AlternatingLeastSquares, not {type(model).__name__}"
        )
    # the workers train with the 'cpu' backend, whatever the model's own backend is
    settings = SolverSettings.from_model(model, get_backend("cpu"))
    if (
        settings.confidence != "implicit"
        or settings.alpha0 != 1.0
        or settings.init_stddev is not None
    ):
        raise InvalidValueError(
            "fit_distributed supports implicit's model and nu only: leave confidence, "
            "alpha0 and init_stddev at their defaults, or fit on one machine"
        )
    if settings.block_size is not None:
        raise InvalidValueError("solver='ials++' is not supported by the Dask fit: use 'cg'")
    return settings


class BlockedFit:
    """The futures of one Dask fit, per side, and its steps as tasks on the blocks' owners.

    Every attribute below maps ``USERS`` and ``ITEMS`` to one future (or None) per block;
    block ``b`` of both sides lives on ``placement.owner(b)``.

    Parameters
    ----------
    client : distributed.Client
    data : BlockedInteractions
    settings : als.fitting.SolverSettings
    model : AlternatingLeastSquares
        Gives the thread count, the random state and any factors to start from.

    Attributes
    ----------
    ids : dict
        The rows of the full factor matrix each block holds (user ids; item ranges).
    blocks : dict
        Confidences with columns renumbered to the rows each block references.
    lambdas : dict
        Per-row lambdas (``nu``), or None.
    factors : dict
        The current factor blocks.
    partials : dict
        ``X_b^T X_b`` of each current factor block, in float64.
    """

    def __init__(self, client, data, settings, model):
        self.placement = Placement(client, data.owners)
        self.data, self.settings, self.threads = data, settings, model.num_threads
        self.n_blocks = n_blocks = len(data.user_bounds) - 1
        self.routes = {USERS: data.user_routes, ITEMS: data.item_routes}
        submit = self.placement.submit
        bounds = data.item_bounds
        self.ids = {
            USERS: data.user_ids,
            ITEMS: [
                submit(c, ids_in_range, int(bounds[c]), int(bounds[c + 1])) for c in range(n_blocks)
            ],
        }
        columns = zip(data.item_blocks, data.item_columns, strict=True)
        self.blocks = {
            USERS: [
                submit(b, solver_block, x, settings.alpha) for b, x in enumerate(data.user_blocks)
            ],
            ITEMS: [
                submit(c, solver_block, y, settings.alpha, ids)
                for c, (y, ids) in enumerate(columns)
            ],
        }
        self.lambdas = {
            side: [
                submit(b, row_lambdas, raw, settings) if settings.nu else None
                for b, raw in enumerate(raws)
            ]
            for side, raws in ((USERS, data.user_blocks), (ITEMS, data.item_blocks))
        }
        sizes = {USERS: data.n_users, ITEMS: data.n_items}
        self.factors = starting_factors(self.placement, model, settings, self.ids, sizes)
        self.partials = {side: self._gram_partials(side) for side in SIDES}

    def half_iteration(self, iteration, side):
        """Submit the solve of every block of ``side`` given the other side's routed rows."""
        gram = self.placement.client.submit(
            finish_gram,
            self._gram_sum(side.other),
            self.settings.gram_regularization,
            self.settings.dtype,
        )
        self.factors[side] = self._with_in_blocks(
            side, solve_block, gram, self.settings.cg_steps, self.threads, (iteration, side)
        )
        self.partials[side] = self._gram_partials(side)

    def settle(self):
        """Wait for the iteration's factor blocks and Gram partials (the iteration's time)."""
        from distributed import wait

        wait([future for side in SIDES for future in self.factors[side] + self.partials[side]])

    def loss(self):
        """implicit's normalised training loss, from per-block parts summed on the client."""
        gram64 = self._gram_sum(ITEMS)
        submit, client = self.placement.submit, self.placement.client
        user_parts = client.gather(
            self._with_in_blocks(USERS, block_loss, gram64, self.data.n_items, self.threads)
        )
        item_squares = client.gather(
            [
                submit(c, squared_norm, y, self.lambdas[ITEMS][c])
                for c, y in enumerate(self.factors[ITEMS])
            ]
        )
        loss_parts, user_squares = zip(*user_parts, strict=True)
        squared_norms = sum(user_squares) + sum(item_squares)
        # with per-row lambdas the penalties already carry them
        nu = self.settings.nu
        regularization = self.settings.loss_regularization if nu == 0.0 else 1.0
        return normalised_loss(add_loss_parts(loss_parts), squared_norms, regularization)

    def gathered(self, side):
        """The full factor matrix of ``side``, gathered on the client from its blocks."""
        client = self.placement.client
        rows = self.data.n_users if side == USERS else self.data.n_items
        result = np.empty((rows, self.settings.factors), dtype=self.settings.dtype)
        blocks = zip(client.gather(self.ids[side]), client.gather(self.factors[side]), strict=True)
        for ids, block in blocks:
            result[ids] = block
        return result

    def _with_in_blocks(self, side, function, *shared):
        """Futures of ``function(block, factors, *shared, lambdas, *in_block)`` for every
        block of ``side``, each on its owner with the other side's rows it references."""
        return [
            self.placement.submit(
                b,
                function,
                self.blocks[side][b],
                self.factors[side][b],
                *shared,
                self.lambdas[side][b],
                *self._in_block(side, b),
            )
            for b in range(self.n_blocks)
        ]

    def _gram_partials(self, side):
        return [self.placement.submit(b, gram_partial, x) for b, x in enumerate(self.factors[side])]

    def _gram_sum(self, side):
        """The sum of ``side``'s Gram partials, pairwise and neighbours first, so the order
        (and so the rounding) never depends on the workers."""
        level = list(self.partials[side])
        while len(level) > 1:
            pairs = [
                self.placement.submit(b, sum_pair, level[b], level[b + 1])
                for b in range(0, len(level) - 1, 2)
            ]
            if len(level) % 2:
                pairs.append(level[-1])
            level = pairs
        return level[0]

    def _in_block(self, side, b):
        """Pieces of the other side's factors that block ``b`` of ``side`` references."""
        other = side.other
        sizes = self.data.route_sizes[other.name]
        return [
            self.placement.submit(c, routed_rows, self.factors[other][c], self.routes[other][c], b)
            for c in range(self.n_blocks)
            if sizes[c, b]
        ]
