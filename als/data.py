"""Data in: rating and play-count tables -> one :class:`Interactions` object.

This is the public face of the data layer. :func:`load` (by name, folder, file or DataFrame),
:func:`read_table` and :func:`from_dataframe` turn MovieLens (ml-100k, ml-1m, ml-20m /
ml-latest), Last.fm HetRec 2011 (2k) and any user/item/weight table (CSV, Parquet or a pandas
``DataFrame``) into an :class:`Interactions`: a users x items ``scipy.sparse.csr_matrix`` of
float32 weights in canonical form (sorted indices, no duplicates, no stored zeros) plus the
two-way maps between raw ids and rows/columns and the item titles where the data set has them.

The :class:`Interactions` object itself is :mod:`als.interactions`, reading files is
:mod:`als.readers`, finding and downloading data sets by name (search folders, registry,
checksums, safe unpacking) is :mod:`als.datasets` and every data error is :mod:`als.errors`.
Their public names are importable from here too.

Rules worth knowing:

- Rows are sorted raw user ids, columns sorted raw item ids (``np.unique`` order); a user added
  with :meth:`Interactions.add_user` is appended as the last row.
- Duplicate (user, item) pairs are merged by ``duplicates="sum"`` (default), ``"max"``,
  ``"first"``, ``"last"`` or refused with ``"error"``; the number merged is logged, kept in
  :attr:`Interactions.n_duplicates` and shown by :meth:`Interactions.summary`.
- Rows whose weight is exactly 0 carry no signal and are dropped, with the count reported the
  same way. Negative weights are kept (they mean "disliked" to the model).
- A malformed line raises :class:`DataFormatError` with its line number and text, unless
  ``on_bad_lines="skip"``, which drops it and counts it in :attr:`Interactions.n_bad_lines`.
  Line numbers assume one record per line (no newlines inside quoted CSV fields).

Examples
--------
>>> from als.data import load                                      # doctest: +SKIP
>>> ratings = load("ml-1m").filter(min_weight=3)                   # doctest: +SKIP
>>> print(ratings.summary().splitlines()[0])                       # doctest: +SKIP
ml-1m: 836,478 ratings, 6,039 users, 3,628 items
>>> me = ratings.add_user(["Toy Story (1995)", "Heat (1995)"], weights=5)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from als import errors
from als.datasets import (
    PROJECT_DATA_DIR,  # noqa: F401 (public here too)
    REGISTRY_PATH,  # noqa: F401
    dataset_name_of,
    dataset_names,
    extract_archive,
    find_dataset,
    is_dataset_name,
    lookup_dataset,
    search_paths,
)
from als.errors import *  # noqa: F403 (every error of als.errors is importable from here)
from als.errors import DataFormatError, EmptyDataError, InvalidTypeError
from als.interactions import Interactions, csr_from_entries
from als.lookups import python_scalar
from als.readers import (
    ITEM_NAMES,
    USER_NAMES,
    Records,
    check_file,
    find_weight,
    layout_of_file,
    layout_of_folder,
    parse_table,
    pick_column,
    read_layout,
    read_parquet,
    read_text,
    read_users,
)
from als.registry import layouts
from als.validation import check_choice

__all__ = [
    *errors.__all__,
    "Interactions",
    "dataset_names",
    "extract_archive",
    "find_dataset",
    "from_dataframe",
    "load",
    "load_users",
    "read_table",
    "search_paths",
]

logger = logging.getLogger(__name__)

DUPLICATE_RULES = ("sum", "max", "first", "last", "error")
BAD_LINE_RULES = ("error", "skip")


# --------------------------------------------------------------------------------------------
# Building the canonical CSR from raw (user, item, weight) records.
# --------------------------------------------------------------------------------------------


def _merge_duplicates(keys, weights, rule, describe) -> tuple[np.ndarray, np.ndarray, int]:
    """Sort (row * n_items + col) keys and merge repeated keys by ``rule``."""
    if keys.size < 2 or bool(np.all(keys[1:] > keys[:-1])):
        return keys, weights, 0
    order = np.argsort(keys, kind="stable")
    keys, weights = keys[order], weights[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    n_duplicates = keys.size - starts.size
    if n_duplicates == 0:
        return keys, weights, 0
    if rule == "error":
        first = keys[np.flatnonzero(keys[1:] == keys[:-1])[0]]
        raise DataFormatError(
            f"{describe(first)} appears more than once ({n_duplicates:,} duplicate rows in all); "
            "pass duplicates='sum', 'max', 'first' or 'last' to merge them."
        )
    ends = np.r_[starts[1:], keys.size]
    merged = {
        "sum": lambda: np.add.reduceat(weights, starts),
        "max": lambda: np.maximum.reduceat(weights, starts),
        "first": lambda: weights[starts],
        "last": lambda: weights[ends - 1],
    }[rule]()
    return keys[starts], merged, n_duplicates


def _check_rules(on_bad_lines: str, duplicates: str) -> None:
    check_choice(on_bad_lines, BAD_LINE_RULES, "on_bad_lines")
    check_choice(duplicates, DUPLICATE_RULES, "duplicates")


def _build(
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    *,
    name: str,
    unit: str,
    titles: Mapping | None,
    duplicates: str,
    history: list[str],
    n_bad_lines: int = 0,
) -> Interactions:
    """Turn raw records into an :class:`Interactions`, merging duplicates by ``duplicates``."""
    zero = weights == 0
    n_zero = int(zero.sum())
    if n_zero:
        users, items, weights = users[~zero], items[~zero], weights[~zero]
        history.append(f"dropped {n_zero:,} rows with weight 0")
        logger.warning("%s: dropped %d rows with weight 0", name, n_zero)
    if users.size == 0:
        raise EmptyDataError(f"{name} has no interactions to load.")
    user_ids, user_codes = np.unique(users, return_inverse=True)
    item_ids, item_codes = np.unique(items, return_inverse=True)
    n_items = item_ids.size
    keys = user_codes.astype(np.int64) * n_items + item_codes

    def describe(key):
        user, item = python_scalar(user_ids[key // n_items]), python_scalar(item_ids[key % n_items])
        return f"{name}: the pair (user {user!r}, item {item!r})"

    keys, weights, n_duplicates = _merge_duplicates(keys, weights, duplicates, describe)
    if n_duplicates:
        history.append(f"merged {n_duplicates:,} duplicate (user, item) rows by {duplicates}")
        logger.warning(
            "%s: merged %d duplicate (user, item) rows by %s", name, n_duplicates, duplicates
        )
    matrix = csr_from_entries(keys // n_items, keys % n_items, weights, (user_ids.size, n_items))
    if titles:
        item_titles = np.asarray([titles.get(python_scalar(i), "") for i in item_ids], dtype=str)
    else:
        item_titles = None
    return Interactions(
        matrix,
        user_ids,
        item_ids,
        item_titles,
        name=name,
        unit=unit,
        n_duplicates=n_duplicates,
        n_bad_lines=n_bad_lines,
        history=history,
    )


# --------------------------------------------------------------------------------------------
# Public loaders.
# --------------------------------------------------------------------------------------------


def read_table(
    path: str | os.PathLike,
    user_col: str | None = None,
    item_col: str | None = None,
    weight_col: str | None = None,
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    name: str | None = None,
    titles: Mapping | None = None,
    on_bad_lines: str = "error",
    duplicates: str = "sum",
) -> Interactions:
    """Read a delimited text (CSV, TSV, optionally gzip-compressed) or Parquet table.

    The first line of a text file is the header. Ids are int64 when every one is an integer,
    otherwise str. Without a weight column every row weighs 1.

    Parameters
    ----------
    path : str or path-like
        ``.csv``/``.tsv``/``.txt`` (``.gz`` allowed) or ``.parquet``/``.pq``.
    user_col, item_col, weight_col : str, optional
        Column names; by default the first column named like ``user``/``user_id``,
        ``item``/``item_id``/``movieId``/``artistID`` and ``weight``/``rating``/``count``
        (any case).
    sep : str, optional
        Field separator; default ``"\\t"`` for ``.tsv`` files, else ``","``.
    encoding : str, default "utf-8"
        Text encoding.
    name : str, optional
        Name used in messages; default the file name.
    titles : mapping, optional
        ``{raw item id: title}``.
    on_bad_lines : {"error", "skip"}, default "error"
        Raise :class:`DataFormatError` at the first bad line, or skip and count bad lines.
    duplicates : {"sum", "max", "first", "last", "error"}, default "sum"
        How repeated (user, item) rows are merged.

    Returns
    -------
    Interactions

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    UnknownColumnError
        A column is missing; the message lists the available ones.
    DataFormatError
        A bad line (with ``on_bad_lines="error"``).
    EmptyDataError
        No rows.
    """
    path = check_file(Path(path))
    _check_rules(on_bad_lines, duplicates)
    columns = (user_col, item_col, weight_col)
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = read_parquet(path)
        records, titles, weight = _frame_records(frame, columns, str(path), titles, on_bad_lines)
    else:
        text = read_text(path, encoding)
        if not text.strip():
            raise EmptyDataError(f"{path} is empty.")
        records, weight = parse_table(text, path, *columns, sep, on_bad_lines)
    return _records_to_interactions(
        records, path, name or path.name, "interactions", titles, duplicates,
        weighted=weight is not None,
    )  # fmt: skip


def _records_to_interactions(records, path, name, unit, titles, duplicates, *, weighted):
    """Build an :class:`Interactions` from parsed records, noting how they were read."""
    history = [f"read {records.users.size + records.n_bad:,} records from {path}"]
    if not weighted:
        history.append("no weight column: every row weighs 1")
    if records.n_bad:
        history.append(f"skipped {records.n_bad:,} bad lines (first: {records.first_bad})")
        logger.warning("%s: skipped %d bad lines", name, records.n_bad)
    return _build(
        records.users, records.items, records.weights, name=name, unit=unit, titles=titles,
        duplicates=duplicates, history=history, n_bad_lines=records.n_bad,
    )  # fmt: skip


def from_dataframe(
    frame: pd.DataFrame,
    user_col: str | None = None,
    item_col: str | None = None,
    weight_col: str | None = None,
    *,
    name: str = "DataFrame",
    titles: Mapping | None = None,
    title_col: str | None = None,
    on_bad_lines: str = "error",
    duplicates: str = "sum",
) -> Interactions:
    """Build an :class:`Interactions` from a pandas DataFrame of user, item, weight rows.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per interaction.
    user_col, item_col, weight_col : str, optional
        Column names; found by name like :func:`read_table` when not given.
    name : str, default "DataFrame"
        Name used in messages.
    titles : mapping, optional
        ``{raw item id: title}``.
    title_col : str, optional
        A column holding each row's item title (the first title seen per item is kept).
    on_bad_lines : {"error", "skip"}, default "error"
        Raise at the first row with a missing id or a non-numeric / non-finite weight, or
        skip and count such rows.
    duplicates : str, default "sum"
        As in :func:`read_table`.

    Returns
    -------
    Interactions

    Raises
    ------
    UnknownColumnError, DataFormatError, EmptyDataError
    """
    _check_rules(on_bad_lines, duplicates)
    where = f"the DataFrame {name!r}"
    columns = (user_col, item_col, weight_col)
    records, titles, weight = _frame_records(
        frame, columns, where, titles, on_bad_lines, title_col=title_col
    )
    return _records_to_interactions(
        records, where, name, "interactions", titles, duplicates, weighted=weight is not None
    )


def _frame_records(frame, columns, where, titles, on_bad_lines, *, title_col=None):
    """The records of a DataFrame's user, item and weight columns (found by name where not
    given), its titles (``title_col``'s merged into ``titles``) and its weight column."""
    names = list(frame.columns)
    user_col, item_col, weight_col = columns
    user = pick_column(names, user_col, USER_NAMES, "user", where)
    item = pick_column(names, item_col, ITEM_NAMES, "item", where)
    weight = find_weight(names, weight_col, where)
    if title_col is not None:
        pick_column(names, title_col, (), "title", where)
        pairs = frame[[item, title_col]].dropna().drop_duplicates(subset=item)
        titles = {
            **dict(zip(pairs[item].map(python_scalar), pairs[title_col].astype(str), strict=True)),
            **(titles or {}),
        }
    weights = (
        pd.Series(1.0, index=frame.index)
        if weight is None
        else pd.to_numeric(frame[weight], errors="coerce")
    )
    finite = np.isfinite(weights.to_numpy(dtype=np.float64, na_value=np.nan))
    bad = frame[user].isna() | frame[item].isna() | ~finite
    n_bad, first_bad = int(bad.sum()), None
    if n_bad:
        position = int(np.flatnonzero(bad.to_numpy())[0])
        first_bad = _bad_row_message(frame, position, user, item, weight, where)
        if on_bad_lines == "error":
            raise DataFormatError(first_bad, path=where, line_number=position)
        frame, weights = frame[~bad], weights[~bad]
    records = Records(
        _frame_ids(frame[user]), _frame_ids(frame[item]),
        weights.to_numpy(dtype=np.float64, na_value=np.nan), n_bad, first_bad,
    )  # fmt: skip
    return records, titles, weight


def _bad_row_message(frame, position, user, item, weight, where) -> str:
    row = frame.iloc[position]
    if pd.isna(row[user]):
        problem = "the user id is missing"
    elif pd.isna(row[item]):
        problem = "the item id is missing"
    else:
        problem = f"the weight {row[weight]!r} is not a finite number"
    return f"{where}, row {position} (index {frame.index[position]!r}): {problem}."


def _frame_ids(column: pd.Series) -> np.ndarray:
    """Ids from a DataFrame column: int64 when integral, else str."""
    if column.dtype.kind in "iu":
        return column.to_numpy(dtype=np.int64)
    if column.dtype.kind == "f" and np.all(np.mod(column.to_numpy(), 1) == 0):
        return column.to_numpy(dtype=np.int64)
    return np.asarray(column.astype(str).str.strip(), dtype=str)


def _load_layout(folder_or_file: Path, layout, name: str, on_bad_lines, duplicates):
    """Read a data set laid out as ``layout`` (ratings and, when present, titles)."""
    records, ratings, titles = read_layout(folder_or_file, layout, on_bad_lines)
    return _records_to_interactions(
        records, ratings, name, layout.unit, titles, duplicates, weighted=True
    )


def load(
    source,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    weight_col: str | None = None,
    name: str | None = None,
    on_bad_lines: str = "error",
    duplicates: str = "sum",
    download: bool = True,
    sep: str | None = None,
    encoding: str | None = None,
    titles: Mapping | None = None,
    title_col: str | None = None,
) -> Interactions:
    """Load a data set by name, folder, file or DataFrame into an :class:`Interactions`.

    Parameters
    ----------
    source : str, path-like or pandas.DataFrame
        - a known name (:func:`dataset_names`): found by :func:`find_dataset`;
        - a folder holding ``ratings.dat[.gz]`` (ml-1m style, ``::``), ``u.data`` (ml-100k),
          ``user_artists.dat`` (Last.fm 2k) or ``ratings.csv`` (ml-20m / ml-latest);
          titles come from ``movies.dat``, ``u.item``, ``artists.dat`` or ``movies.csv``
          beside it when present;
        - one of those ratings files itself;
        - any other CSV/TSV/Parquet file (see :func:`read_table`);
        - a DataFrame (see :func:`from_dataframe`).
    user_col, item_col, weight_col : str, optional
        Columns of a generic table or DataFrame.
    name : str, optional
        Name used in messages and summaries; default the data set or file name.
    on_bad_lines : {"error", "skip"}, default "error"
        Raise :class:`DataFormatError` at the first bad line, or skip and count.
    duplicates : {"sum", "max", "first", "last", "error"}, default "sum"
        How repeated (user, item) rows are merged.
    download : bool, default True
        Passed to :func:`find_dataset`.
    sep, encoding : str, optional
        Of a generic text table (see :func:`read_table`).
    titles : mapping, optional
        Item id to title, for a generic table or a DataFrame.
    title_col : str, optional
        Title column of a DataFrame.

    Returns
    -------
    Interactions

    Raises
    ------
    FileNotFoundError
        A path does not exist (:class:`DatasetNotFoundError` for a known name not found).
    UnknownDatasetError
        ``source`` is neither a path nor a known name.
    TypeError
        An option that does not apply to ``source`` (e.g. ``sep`` for a DataFrame, or any
        table option for a known data set); unknown keywords are refused too.
    DataFormatError, UnknownColumnError, EmptyDataError
        See :func:`read_table`.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"user": ["ann", "bob"], "item": [10, 20], "weight": [1.0, 2.0]})
    >>> print(load(frame, name="tiny").headline())
    tiny: 2 interactions, 2 users, 2 items
    """
    _check_rules(on_bad_lines, duplicates)
    common = {"on_bad_lines": on_bad_lines, "duplicates": duplicates}
    columns = {"user_col": user_col, "item_col": item_col, "weight_col": weight_col}
    options = {"sep": sep, "encoding": encoding, "titles": titles, "title_col": title_col}
    table_options = {key: value for key, value in options.items() if value is not None}

    def refuse(keys, what):
        if keys:
            raise InvalidTypeError(f"load(): {', '.join(sorted(keys))} does not apply to {what}.")

    if isinstance(source, pd.DataFrame):
        refuse(set(table_options) & {"sep", "encoding"}, "a DataFrame")
        return from_dataframe(
            source, **columns, name=name or "DataFrame", **common, **table_options
        )
    refuse(set(table_options) & {"title_col"}, "a file (only to a DataFrame)")
    path = Path(source)
    if not path.exists():
        if isinstance(source, str) and is_dataset_name(source):
            dataset = lookup_dataset(source)
            refuse(set(table_options) | {k for k, v in columns.items() if v}, dataset.name)
            folder = find_dataset(source, download=download)
            return _load_layout(folder, layouts()[dataset.layout], name or dataset.name, **common)
        if isinstance(source, str) and os.sep not in source and "." not in source:
            lookup_dataset(source)  # raises UnknownDatasetError listing the names
        check_file(path)
    given_columns = any(v is not None for v in columns.values())
    if path.is_dir():
        refuse(set(table_options) | {k for k, v in columns.items() if v}, f"a folder ({path})")
        return _load_layout(path, layout_of_folder(path), name or dataset_name_of(path), **common)
    layout = layout_of_file(path)
    if layout is not None and not given_columns and not table_options:
        return _load_layout(path, layout, name or dataset_name_of(path.parent), **common)
    return read_table(path, **columns, name=name, **common, **table_options)


def load_users(source: str | os.PathLike) -> pd.DataFrame:
    """Read the MovieLens user table (ml-1m ``users.dat`` or ml-100k ``u.user``).

    Parameters
    ----------
    source : str or path-like
        A data set name (``"ml-1m"``, ``"ml-100k"``), its folder, or the file itself.

    Returns
    -------
    pandas.DataFrame
        Columns ``user, gender, age, occupation, zip`` (ml-100k: ``user, age, gender,
        occupation, zip``), one row per user.

    Raises
    ------
    FileNotFoundError
        The folder has no user table.
    """
    path = Path(source)
    if not path.exists() and is_dataset_name(str(source)):
        path = find_dataset(str(source))
    return read_users(path)
