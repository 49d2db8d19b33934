"""Interactions read on the Dask workers: a CSV file, a Parquet file or a folder of Parquet files.

What ``python -m als.train --workers N`` / ``--scheduler ADDRESS`` does with a table:

1. :func:`read_table` describes the table as a dask DataFrame; its partitions are read by the
   workers when a computation needs them (the path must be readable from every worker).
2. ids are mapped to dense rows and columns there (:func:`als.distributed.encode_ids`: the
   client receives the sorted unique ids, the id maps, and nothing else of the data);
3. :func:`split_frame` holds out a fraction of the rows there, by a hash of (user, item,
   seed): the same rows whatever the partitioning, and duplicates stay together;
4. :func:`als.distributed.partition_interactions` builds the blocks there.

For metrics and answers the client collects the rows of a sample of users only
(:func:`sample_rows`): ``sample_users`` of them at most.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse

from .errors import InvalidValueError

__all__ = ["read_table", "sample_rows", "sampled_users", "split_frame", "table_format"]

#: file suffixes read as CSV (a separator other than a comma with ``sep``)
CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")

#: the columns of a table once read
COLUMNS = ("user", "item", "weight")


def table_format(path):
    """``"csv"``, ``"parquet"`` or None (not a table the workers read: load it on the client)."""
    if path is None:
        return None
    path = Path(path)
    name = path.name.lower()
    if path.is_file() and name.endswith(CSV_SUFFIXES):
        return "csv"
    if path.is_file() and name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if path.is_dir() and any(p.name.lower().endswith(PARQUET_SUFFIXES) for p in path.iterdir()):
        return "parquet"
    return None


def read_table(
    path, user_col, item_col, weight_col=None, *, sep=None, min_weight=None, skip_bad_lines=False
):
    """A dask DataFrame of ``user``, ``item``, ``weight`` columns from a CSV or Parquet table.

    Parameters
    ----------
    path : str or path-like
        A CSV file, a Parquet file or a folder of Parquet files.
    user_col, item_col : str
        Columns holding the raw user and item ids.
    weight_col : str, optional
        Column of weights; without it every row weighs 1.
    sep : str, optional
        CSV separator (default ``,``; ``\\t`` for ``.tsv``).
    min_weight : float, optional
        Drop rows weighing less (on the workers).
    skip_bad_lines : bool
        Skip malformed CSV lines instead of failing.

    Raises
    ------
    InvalidValueError
        For a path that is not such a table, or columns it does not have.
    """
    import dask.dataframe as dd

    kind = table_format(path)
    wanted = [c for c in (user_col, item_col, weight_col) if c is not None]
    if kind == "csv":
        sep = sep or ("\t" if ".tsv" in Path(path).name.lower() else ",")
        options = {"on_bad_lines": "skip"} if skip_bad_lines else {}
        frame = dd.read_csv(os.fspath(path), sep=sep, blocksize="64MB", **options)
    elif kind == "parquet":
        frame = dd.read_parquet(os.fspath(path))
    else:
        raise InvalidValueError(
            f"--data must be a CSV file, a Parquet file or a folder of Parquet files to be read "
            f"on the workers, got {os.fspath(path)!r}"
        )
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise InvalidValueError(
            f"the table {os.fspath(path)!r} has no column {missing[0]!r} "
            f"(columns: {', '.join(map(str, frame.columns))})"
        )
    frame = frame[wanted].rename(columns={user_col: "user", item_col: "item"})
    if weight_col is None:
        frame = frame.assign(weight=np.float32(1))
    else:
        frame = frame.rename(columns={weight_col: "weight"})
        frame = frame.assign(weight=frame["weight"].astype(np.float32))
    if min_weight is not None:
        frame = frame[frame["weight"] >= min_weight]
    return frame


def _uniform(keys, seed):
    """A float in [0, 1) per int64 key, the same for the same key and seed (splitmix64)."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _test_mask(part, n_items, seed):
    keys = part["user"].to_numpy(np.int64) * n_items + part["item"].to_numpy(np.int64)
    return _uniform(keys, seed)


def split_frame(frame, fraction, seed, n_items):
    """(train, test) dask DataFrames: each (user, item) pair goes to test with ``fraction``.

    ``frame`` holds dense ids. As in :func:`als.evaluation.train_test_split`, the test rows
    keep only positive weights.
    """
    if fraction <= 0:
        return frame, None
    if not 0 < fraction < 1:
        raise InvalidValueError(f"--test-fraction must be in [0, 1), got {fraction}")

    def pick(part, held_out):
        chosen = (_test_mask(part, n_items, seed) < fraction) == held_out
        part = part[chosen]
        return part[part["weight"] > 0] if held_out else part

    meta = frame._meta
    return (
        frame.map_partitions(pick, False, meta=meta),
        frame.map_partitions(pick, True, meta=meta),
    )


def sampled_users(n_users, sample_users, seed, always=()):
    """Sorted dense user ids to evaluate on: ``sample_users`` drawn, plus ``always``."""
    rng = np.random.default_rng(seed)
    if n_users <= sample_users:
        return np.arange(n_users)
    drawn = rng.choice(n_users, size=sample_users, replace=False)
    return np.union1d(drawn, np.asarray(always, dtype=np.int64))


def sample_rows(frame, users, shape):
    """The CSR ``shape`` matrix of the rows of ``users`` only, collected on the client."""
    chosen = frame[frame["user"].isin(users)].compute()
    return scipy.sparse.csr_matrix(
        (
            chosen["weight"].to_numpy(np.float32),
            (chosen["user"].to_numpy(np.int64), chosen["item"].to_numpy(np.int64)),
        ),
        shape=shape,
    )
