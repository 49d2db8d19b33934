"""The Dask fit's starting factors: the model's own, or drawn block by block on the workers.

Drawn factors are those of one ``initial_factors`` draw on the client: the client records
the random stream's state at the start of every chunk of rows (:func:`initial_factor_states`)
and each block's owner redraws the chunks that hold its rows (:func:`random_rows`). The
client never holds the factors, and a lost block is redrawn identically.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np

from ..errors import InvalidValueError
from ..fitting import initial_factors
from ..validation import check_random_state

__all__ = [
    "RANDOM_CHUNK_ELEMENTS",
    "initial_factor_states",
    "random_rows",
    "rows_from_client",
    "starting_factors",
]

#: random draws per chunk when the client advances the stream to a block's first row
RANDOM_CHUNK_ELEMENTS = 1 << 22


def initial_factor_states(rng, bounds, factors, dtype):
    """Bit-generator states at the first row of each block of ``bounds``, advancing ``rng``.

    Drawing the blocks from these states gives exactly ``rng.random((bounds[-1], factors))``:
    NumPy draws each value from the stream in order, whatever the size of the calls. The
    client advances ``rng`` in chunks of ``RANDOM_CHUNK_ELEMENTS`` values, so it holds one
    chunk (16 MiB in float32), never the factors.
    """
    rows_per_chunk = max(1, RANDOM_CHUNK_ELEMENTS // factors)
    scratch = np.empty((rows_per_chunk, factors), dtype=dtype)
    states = []
    for b in range(len(bounds) - 1):
        states.append(copy.deepcopy(rng.bit_generator.state))
        for start in range(int(bounds[b]), int(bounds[b + 1]), rows_per_chunk):
            rows = min(rows_per_chunk, int(bounds[b + 1]) - start)
            rng.random(out=scratch[:rows], dtype=dtype)
    return states


def random_rows(states, chunk_rows, n_rows, ids, factors, dtype):
    """Rows ``ids`` (sorted) of the initial factors, drawn chunk by chunk from the stream.

    A task on a block's owner. ``states[k]`` is the client's stream at row
    ``k * chunk_rows``: each chunk holding one of ``ids`` is drawn whole from a copy of it,
    so the rows are those of one draw of all ``n_rows`` rows.
    """
    result = np.empty((len(ids), factors), dtype=dtype)
    chunk_of = ids // chunk_rows
    for k in np.unique(chunk_of):
        state = states[k]
        generator = np.random.Generator(getattr(np.random, state["bit_generator"])())
        generator.bit_generator.state = state
        start = int(k) * chunk_rows
        rows = initial_factors(generator, min(chunk_rows, n_rows - start), factors, dtype)
        chosen = chunk_of == k
        result[chosen] = rows[ids[chosen] - start]
    return result


def rows_from_client(rows):
    """A block of the model's factors, which travelled inside its task, as a C array."""
    return np.array(rows, order="C")


def starting_factors(placement, model, settings, ids_by_side, sizes):
    """Futures of both sides' starting factor blocks: the model's own, or drawn by block.

    Follows ``AlternatingLeastSquares.fit``: a side with factors of the right shape keeps
    them; a missing side is drawn from ``random_state``, user factors first. Block ``b``
    (the rows ``ids_by_side[side][b]``, a future on its owner) is made on its owner and
    never leaves it.

    Raises
    ------
    InvalidValueError
        When the model holds factors of another shape.
    """
    client, dtype, factors, rng = placement.client, settings.dtype, settings.factors, None
    chunk_rows = max(1, RANDOM_CHUNK_ELEMENTS // factors)
    blocks = {}
    for side, ids in ids_by_side.items():
        current = getattr(model, side.factors_name)
        rows = sizes[side]
        if current is None:
            rng = rng or check_random_state(model.random_state)
            chunks = np.append(np.arange(0, rows, chunk_rows), rows)
            states = initial_factor_states(rng, chunks, factors, dtype)
            blocks[side] = [
                placement.submit(
                    b, random_rows, states, chunk_rows, rows, block_ids, factors, dtype
                )
                for b, block_ids in enumerate(ids)
            ]
        elif current.shape == (rows, factors):
            array = np.ascontiguousarray(current, dtype=dtype)
            # the rows travel inside their tasks: the scheduler keeps them for a lost worker
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="Sending large graph", category=UserWarning
                )
                blocks[side] = [
                    placement.submit(b, rows_from_client, array[block_ids], pure=False)
                    for b, block_ids in enumerate(client.gather(ids))
                ]
        else:
            raise InvalidValueError(
                f"the interactions need {side.factors_name} of shape {(rows, factors)} but "
                f"the model already has {tuple(current.shape)}; fit a new model or set "
                f"{side.factors_name} = None to start again"
            )
    return blocks
