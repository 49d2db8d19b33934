"""Data in: rating and play-count tables -> one :class:`Interactions` object.

This is the public face of the data layer. :func:`load` (by name, folder, file or DataFrame),
:func:`read_table` and :func:`from_dataframe` turn MovieLens (ml-100k, ml-1m, ml-20m /
ml-latest), Last.fm HetRec 2011 (2k) and any user/item/weight table (CSV, Parquet or a pandas
``DataFrame``) into an :class:`Interactions`: a users x items ``scipy.sparse.csr_matrix`` of
float32 weights in canonical form (sorted indices, no duplicates, no stored zeros) plus the
two-way maps between raw ids and rows/columns and the item titles where the data set has them.

Reading files is :mod:`als.readers`; finding and downloading data sets by name (search
folders, registry, checksums, safe unpacking) is :mod:`als.datasets`. Their public names and
every data error are importable from here too.

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

import difflib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from als.datasets import (
    PROJECT_DATA_DIR,  # noqa: F401 (public in als.data before the split: kept importable)
    REGISTRY_PATH,  # noqa: F401
    ChecksumError,
    DatasetNotFoundError,
    UnknownDatasetError,
    UnsafeArchiveError,
    _dataset,
    _dataset_name_of,
    _is_dataset_name,
    dataset_names,
    extract_archive,
    find_dataset,
    search_paths,
)
from als.readers import (
    _ITEM_NAMES,
    _LAYOUTS,
    _SPACED_INTEGER,
    _USER_NAMES,
    DataError,
    DataFormatError,
    UnknownColumnError,
    _check_file,
    _find_weight,
    _layout_of_file,
    _layout_of_folder,
    _parse_table,
    _pick_column,
    _read_layout,
    _read_parquet,
    _read_text,
    _read_users,
    _Records,
)

__all__ = [
    "AmbiguousItemError",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DatasetNotFoundError",
    "EmptyDataError",
    "Interactions",
    "UnknownColumnError",
    "UnknownDatasetError",
    "UnknownItemError",
    "UnknownUserError",
    "UnsafeArchiveError",
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
# Errors about the data itself. The reading errors (DataError, DataFormatError,
# UnknownColumnError) live in als.readers, the data set errors in als.datasets.
# --------------------------------------------------------------------------------------------


class EmptyDataError(DataError, ValueError):
    """A data set is empty, or filtering left nothing."""


class UnknownUserError(DataError, KeyError):
    """A raw user id is not in the data."""


class UnknownItemError(DataError, KeyError):
    """A raw item id or a title is not in the data; ``suggestions`` holds close matches."""

    def __init__(self, message, *, key=None, suggestions=()):
        super().__init__(message)
        self.key = key
        self.suggestions = list(suggestions)


class AmbiguousItemError(UnknownItemError):
    """A title names several items; ``candidates`` holds their raw ids."""

    def __init__(self, message, *, key=None, candidates=()):
        super().__init__(message, key=key)
        self.candidates = list(candidates)


# --------------------------------------------------------------------------------------------
# Building the canonical CSR from raw (user, item, weight) records.
# --------------------------------------------------------------------------------------------


def _index_dtype(*sizes: int) -> type:
    return np.int32 if max(sizes, default=0) < np.iinfo(np.int32).max else np.int64


def _csr(rows, cols, data, shape) -> sp.csr_matrix:
    """Build a CSR from entries already sorted by (row, col) and free of duplicates."""
    counts = np.bincount(rows, minlength=shape[0])
    dtype = _index_dtype(len(data), shape[1])
    indptr = np.zeros(shape[0] + 1, dtype=dtype)
    np.cumsum(counts, out=indptr[1:])
    matrix = sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(cols, dtype=dtype), indptr),
        shape=shape,
    )
    matrix.has_sorted_indices = True
    return matrix


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


def _check_choice(value: str, choices: tuple[str, ...], argument: str) -> None:
    if value not in choices:
        raise ValueError(f"{argument} must be one of {', '.join(choices)}; got {value!r}.")


def _check_rules(on_bad_lines: str, duplicates: str) -> None:
    _check_choice(on_bad_lines, BAD_LINE_RULES, "on_bad_lines")
    _check_choice(duplicates, DUPLICATE_RULES, "duplicates")


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
        user, item = _scalar(user_ids[key // n_items]), _scalar(item_ids[key % n_items])
        return f"{name}: the pair (user {user!r}, item {item!r})"

    keys, weights, n_duplicates = _merge_duplicates(keys, weights, duplicates, describe)
    if n_duplicates:
        history.append(f"merged {n_duplicates:,} duplicate (user, item) rows by {duplicates}")
        logger.warning(
            "%s: merged %d duplicate (user, item) rows by %s", name, n_duplicates, duplicates
        )
    matrix = _csr(keys // n_items, keys % n_items, weights, (user_ids.size, n_items))
    if titles:
        item_titles = np.asarray([titles.get(_scalar(i), "") for i in item_ids], dtype=str)
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


def _scalar(value):
    """A numpy scalar as the plain Python int or str it stands for."""
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------------------------
# The Interactions object.
# --------------------------------------------------------------------------------------------


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


def _check_ids(ids, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iuU":
        raise ValueError(f"{what} must be a 1-d array of integers or str; got {ids.dtype}.")
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    if np.unique(ids).size != ids.size:
        raise ValueError(f"{what} holds repeated ids.")
    return ids


def _canonical(matrix) -> sp.csr_matrix:
    """Return ``matrix`` as a float32 CSR with sorted indices, no duplicates and no zeros."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    if (matrix.data == 0).any():
        matrix = matrix.copy()
        matrix.eliminate_zeros()
    return matrix


class Interactions:
    """A users x items weight matrix with the maps between raw ids and rows/columns.

    Build one with :func:`load`, :func:`read_table` or :func:`from_dataframe`; it does not
    change after construction: :meth:`filter` and :meth:`add_user` return new objects.

    Parameters
    ----------
    user_items : scipy.sparse matrix, shape (n_users, n_items)
        Weights; stored as a canonical float32 CSR (sorted indices, no duplicates, no zeros).
    user_ids, item_ids : array-like of int or str
        Raw id of each row / column, without repeats.
    item_titles : array-like of str, optional
        Title of each column; ``""`` where unknown.
    name : str, default "data"
        What the data is called in messages, e.g. ``"ml-1m"``.
    unit : str, default "interactions"
        What one stored entry is, e.g. ``"ratings"``.
    n_duplicates, n_bad_lines : int, default 0
        How many duplicate rows were merged and bad lines skipped while loading.
    history : sequence of str, optional
        What was done to the data, one short sentence per step; shown by :meth:`summary`.

    Attributes
    ----------
    user_items : scipy.sparse.csr_matrix
        The weights. Do not modify it in place: it may be shared with other objects.
    """

    def __init__(
        self,
        user_items,
        user_ids,
        item_ids,
        item_titles=None,
        *,
        name: str = "data",
        unit: str = "interactions",
        n_duplicates: int = 0,
        n_bad_lines: int = 0,
        history: Sequence[str] = (),
    ):
        matrix = _canonical(user_items)
        user_ids, item_ids = _check_ids(user_ids, "user_ids"), _check_ids(item_ids, "item_ids")
        if matrix.shape != (user_ids.size, item_ids.size):
            raise ValueError(
                f"user_items has shape {matrix.shape} but there are {user_ids.size} user ids "
                f"and {item_ids.size} item ids."
            )
        if item_titles is not None:
            item_titles = np.asarray(item_titles, dtype=str)
            if item_titles.shape != item_ids.shape:
                raise ValueError(
                    f"item_titles has {item_titles.size} entries, not {item_ids.size}."
                )
            if not np.char.str_len(item_titles).any():
                item_titles = None
        self._user_items = matrix
        self._user_ids, self._item_ids = _frozen(user_ids), _frozen(item_ids)
        self._item_titles = None if item_titles is None else _frozen(item_titles)
        self._name, self._unit = str(name), str(unit)
        self._n_duplicates, self._n_bad_lines = int(n_duplicates), int(n_bad_lines)
        self._history = tuple(str(h) for h in history)
        self._user_lookup = self._item_lookup = self._title_lookup = None

    # ---- read-only views ------------------------------------------------------------------

    @property
    def user_items(self) -> sp.csr_matrix:
        """The users x items float32 CSR matrix of weights."""
        return self._user_items

    @property
    def user_ids(self) -> np.ndarray:
        """Raw user id of each row (read-only int64 or str array)."""
        return self._user_ids

    @property
    def item_ids(self) -> np.ndarray:
        """Raw item id of each column (read-only int64 or str array)."""
        return self._item_ids

    @property
    def item_titles(self) -> np.ndarray | None:
        """Title of each column (``""`` where unknown), or None when the data has no titles."""
        return self._item_titles

    @property
    def name(self) -> str:
        """What the data set is called in messages."""
        return self._name

    @property
    def unit(self) -> str:
        """What one stored entry is ("ratings", "interactions")."""
        return self._unit

    @property
    def n_users(self) -> int:
        """Number of rows."""
        return self._user_items.shape[0]

    @property
    def n_items(self) -> int:
        """Number of columns."""
        return self._user_items.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_users, n_items)``."""
        return self._user_items.shape

    @property
    def nnz(self) -> int:
        """Number of stored (user, item) entries."""
        return self._user_items.nnz

    @property
    def n_duplicates(self) -> int:
        """Duplicate (user, item) rows merged while loading."""
        return self._n_duplicates

    @property
    def n_bad_lines(self) -> int:
        """Bad lines skipped while loading (``on_bad_lines="skip"``)."""
        return self._n_bad_lines

    @property
    def history(self) -> tuple[str, ...]:
        """What was done to the data, one sentence per step."""
        return self._history

    def __len__(self) -> int:
        return self.nnz

    def __repr__(self) -> str:
        return f"<Interactions {self.headline()}>"

    def __str__(self) -> str:
        return self.summary()

    def headline(self) -> str:
        """Return the one-line count, e.g. ``"ml-1m: 1,000,209 ratings, 6,040 users, 3,706 items"``.

        Returns
        -------
        str
        """
        return (
            f"{self._name}: {self.nnz:,} {self._unit}, {self.n_users:,} users, "
            f"{self.n_items:,} items"
        )

    def summary(self) -> str:
        """Return the headline followed by one indented line per step in :attr:`history`.

        Returns
        -------
        str
            E.g. ``"ml-1m: 836,478 ratings, 6,039 users, 3,628 items\\n  - read ..."``.
        """
        return "\n".join([self.headline(), *(f"  - {step}" for step in self._history)])

    def to_frame(self) -> pd.DataFrame:
        """Return the stored entries as a DataFrame with columns ``user, item, weight``."""
        coo = self._user_items.tocoo()
        return pd.DataFrame(
            {
                "user": self._user_ids[coo.row],
                "item": self._item_ids[coo.col],
                "weight": coo.data,
            }
        )

    # ---- id lookups -----------------------------------------------------------------------

    def user_index(self, user_id) -> int:
        """Return the row of raw user id ``user_id``.

        Integer ids may be given as digit strings (``"42"``) and str ids as ints.

        Raises
        ------
        UnknownUserError
            The id is not in the data.
        """
        if self._user_lookup is None:
            self._user_lookup = {_scalar(u): row for row, u in enumerate(self._user_ids)}
        row = self._user_lookup.get(_coerce_key(user_id, self._user_ids))
        if row is None:
            raise UnknownUserError(
                f"Unknown user id {user_id!r} in {self._name} "
                f"({self.n_users:,} users{_id_range(self._user_ids)})."
            )
        return row

    def item_index(self, item_id) -> int:
        """Return the column of raw item id ``item_id``.

        Raises
        ------
        UnknownItemError
            The id is not in the data.
        """
        column = self._item_lookup_table().get(_coerce_key(item_id, self._item_ids))
        if column is None:
            raise UnknownItemError(
                f"Unknown item id {item_id!r} in {self._name} "
                f"({self.n_items:,} items{_id_range(self._item_ids)}).",
                key=item_id,
            )
        return column

    def _item_lookup_table(self) -> dict:
        if self._item_lookup is None:
            self._item_lookup = {_scalar(i): col for col, i in enumerate(self._item_ids)}
        return self._item_lookup

    def user_id(self, row: int):
        """Return the raw id (int or str) of user row ``row``."""
        return _scalar(self._user_ids[row])

    def item_id(self, column: int):
        """Return the raw id (int or str) of item column ``column``."""
        return _scalar(self._item_ids[column])

    def item_title(self, column: int) -> str:
        """Return the title of item column ``column``, or its raw id as text when unknown."""
        title = "" if self._item_titles is None else str(self._item_titles[column])
        return title or str(self.item_id(column))

    def title_index(self, title: str) -> int:
        """Return the column of the item called ``title``.

        The title is matched exactly first, then ignoring case and surrounding spaces.

        Raises
        ------
        UnknownItemError
            No item has this title; the message lists up to five close matches.
        AmbiguousItemError
            Several items have this title; the message lists their raw ids.
        """
        exact, folded = self._titles()
        matches = exact.get(title) or folded.get(title.strip().casefold())
        if not matches:
            suggestions = self._close_titles(title)
            hint = f"; close matches: {'; '.join(suggestions)}" if suggestions else ""
            raise UnknownItemError(
                f"No item titled {title!r} in {self._name}{hint}.",
                key=title,
                suggestions=suggestions,
            )
        if len(matches) > 1:
            ids = [self.item_id(c) for c in matches]
            raise AmbiguousItemError(
                f"{len(ids)} items in {self._name} are titled {title!r} (ids "
                f"{', '.join(map(repr, ids))}); pass the raw item id instead.",
                key=title,
                candidates=ids,
            )
        return matches[0]

    def _titles(self) -> tuple[dict, dict]:
        if self._title_lookup is None:
            exact, folded = {}, {}
            for column, title in enumerate(() if self._item_titles is None else self._item_titles):
                if title:
                    exact.setdefault(str(title), []).append(column)
                    folded.setdefault(str(title).strip().casefold(), []).append(column)
            self._title_lookup = (exact, folded)
        return self._title_lookup

    def _close_titles(self, title: str) -> list[str]:
        exact, folded = self._titles()
        close = difflib.get_close_matches(title.strip().casefold(), list(folded), n=5, cutoff=0.6)
        return [str(self._item_titles[folded[c][0]]) for c in close]

    def resolve_item(self, key, *, by: str = "auto") -> int:
        """Return the column of an item given by raw id or by title.

        Parameters
        ----------
        key : int or str
            A raw item id or a title.
        by : {"auto", "id", "title"}, default "auto"
            ``"auto"``: ints are ids; a str is an id when it is exactly a raw id (or, for
            integer ids, a digit string that is one), otherwise a title.

        Raises
        ------
        UnknownItemError, AmbiguousItemError
        """
        _check_choice(by, ("auto", "id", "title"), "by")
        if by == "title":
            return self.title_index(str(key))
        if by == "id" or not isinstance(key, str) or self._item_titles is None:
            return self.item_index(key)
        column = self._item_lookup_table().get(_coerce_key(key, self._item_ids))
        if column is not None and key not in self._titles()[0]:
            return column
        return self.title_index(key)

    # ---- new data -------------------------------------------------------------------------

    def filter(
        self,
        min_weight: float | None = None,
        min_user_interactions: int = 1,
        min_item_interactions: int = 1,
        *,
        iterate: bool = True,
    ) -> Interactions:
        """Return a copy keeping strong entries and active users and items.

        Entries with weight below ``min_weight`` are dropped first. Then users with fewer
        than ``min_user_interactions`` entries and items with fewer than
        ``min_item_interactions`` are dropped, both counted on the same matrix. With
        ``iterate=True`` (default) this repeats until nothing changes (a fixed point: every
        kept user and item meets its minimum). With ``iterate=False`` it happens once, so a
        kept user may have fewer entries than the minimum after its items were dropped.
        Users and items left without entries are always dropped.

        Parameters
        ----------
        min_weight : float, optional
            Keep entries with ``weight >= min_weight``.
        min_user_interactions, min_item_interactions : int, default 1
            Minimum entries per user and per item.
        iterate : bool, default True
            Repeat the user/item pruning until it stops changing anything.

        Returns
        -------
        Interactions

        Raises
        ------
        EmptyDataError
            Nothing is left.
        """
        for value, label in (
            (min_user_interactions, "min_user_interactions"),
            (min_item_interactions, "min_item_interactions"),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{label} must be an integer >= 1; got {value!r}.")
        matrix = self._user_items
        rows = np.repeat(np.arange(self.n_users), np.diff(matrix.indptr))
        cols, data = matrix.indices, matrix.data
        keep_users = np.ones(self.n_users, dtype=bool)
        keep_items = np.ones(self.n_items, dtype=bool)
        if min_weight is not None:
            strong = data >= min_weight
            rows, cols, data = rows[strong], cols[strong], data[strong]
        while True:
            user_counts = np.bincount(rows, minlength=self.n_users)
            item_counts = np.bincount(cols, minlength=self.n_items)
            drop_users = keep_users & (user_counts < min_user_interactions)
            drop_items = keep_items & (item_counts < min_item_interactions)
            keep_users &= ~drop_users
            keep_items &= ~drop_items
            entries = keep_users[rows] & keep_items[cols]
            rows, cols, data = rows[entries], cols[entries], data[entries]
            if not iterate or not (drop_users.any() or drop_items.any()):
                break
        # Users/items with no entries at all (e.g. after iterate=False) go too.
        keep_users &= np.bincount(rows, minlength=self.n_users) > 0
        keep_items &= np.bincount(cols, minlength=self.n_items) > 0
        step = (
            f"filter(min_weight={min_weight}, min_user_interactions={min_user_interactions}, "
            f"min_item_interactions={min_item_interactions}, iterate={iterate})"
        )
        if data.size == 0:
            raise EmptyDataError(
                f"{step} left no {self._unit} in {self._name} ({self.nnz:,} before)."
            )
        new_row = np.cumsum(keep_users) - 1
        new_col = np.cumsum(keep_items) - 1
        shape = (int(keep_users.sum()), int(keep_items.sum()))
        kept = _csr(new_row[rows], new_col[cols], data, shape)
        note = (
            f"{step} kept {data.size:,} of {self.nnz:,} {self._unit}, {shape[0]:,} of "
            f"{self.n_users:,} users, {shape[1]:,} of {self.n_items:,} items"
        )
        titles = None if self._item_titles is None else self._item_titles[keep_items]
        return self._derive(
            kept, self._user_ids[keep_users], self._item_ids[keep_items], titles, note
        )

    def _derive(self, matrix, user_ids, item_ids, item_titles, note) -> Interactions:
        return Interactions(
            matrix,
            user_ids,
            item_ids,
            item_titles,
            name=self._name,
            unit=self._unit,
            n_duplicates=self._n_duplicates,
            n_bad_lines=self._n_bad_lines,
            history=(*self._history, note),
        )

    def user_row(self, liked, weights=5.0, *, by: str = "auto") -> sp.csr_matrix:
        """Return a 1 x n_items CSR row for a user who liked ``liked``.

        Useful for ``model.recommend(..., recalculate_user=True)`` without changing the data.

        Parameters
        ----------
        liked : iterable of int or str, or a single str
            Raw item ids or titles (see :meth:`resolve_item`).
        weights : float or sequence of float, default 5.0
            One weight for all items, or one per item; finite and non-zero.
        by : {"auto", "id", "title"}, default "auto"
            How to read each entry of ``liked``.

        Raises
        ------
        UnknownItemError, AmbiguousItemError
            An item cannot be found.
        ValueError
            No items, an item listed twice, or a bad weight.
        """
        if isinstance(liked, (str, bytes)):
            liked = [liked]
        columns = [self.resolve_item(key, by=by) for key in liked]
        if not columns:
            raise ValueError("A new user needs at least one liked item.")
        repeated = {c for c in columns if columns.count(c) > 1}
        if repeated:
            names = ", ".join(repr(self.item_title(c)) for c in sorted(repeated))
            raise ValueError(f"Liked items are listed more than once: {names}.")
        values = np.asarray(weights, dtype=np.float64)
        if values.ndim == 0:
            values = np.full(len(columns), float(values))
        if values.shape != (len(columns),):
            raise ValueError(f"Got {values.size} weights for {len(columns)} liked items.")
        if not np.isfinite(values).all() or (values == 0).any():
            raise ValueError("Weights of liked items must be finite and non-zero.")
        order = np.argsort(columns)
        return _csr(
            np.zeros(len(columns), dtype=np.int64),
            np.asarray(columns)[order],
            values[order],
            (1, self.n_items),
        )

    def add_user(self, liked, weights=5.0, *, user_id=None, by: str = "auto") -> Interactions:
        """Return a copy with one more user, appended as the last row.

        Parameters
        ----------
        liked : iterable of int or str, or a single str
            Raw item ids or titles, e.g. five favourite films.
        weights : float or sequence of float, default 5.0
            One weight for all items, or one per item.
        user_id : int or str, optional
            Raw id of the new user; default: one more than the largest integer id, or
            ``"new-user"`` (``"new-user-2"``, ...) for str ids.
        by : {"auto", "id", "title"}, default "auto"
            How to read each entry of ``liked`` (see :meth:`resolve_item`).

        Returns
        -------
        Interactions
            The new user is row ``n_users - 1``.

        Raises
        ------
        UnknownItemError, AmbiguousItemError
            An item cannot be found.
        ValueError
            The user id exists already, no items, an item listed twice, or a bad weight.
        """
        row = self.user_row(liked, weights, by=by)
        new_id = self._new_user_id(user_id)
        matrix = sp.vstack([self._user_items, row], format="csr")
        user_ids = np.append(self._user_ids, new_id)
        note = f"added user {new_id!r} with {row.nnz} liked items"
        return self._derive(matrix, user_ids, self._item_ids, self._item_titles, note)

    def _new_user_id(self, user_id):
        if user_id is None:
            if self._user_ids.dtype.kind == "i":
                return int(self._user_ids.max()) + 1
            taken, n = set(self._user_ids.tolist()), 1
            while (candidate := "new-user" + (f"-{n}" if n > 1 else "")) in taken:
                n += 1
            return candidate
        key = _coerce_key(user_id, self._user_ids)
        if key is None:
            raise ValueError(
                f"User id {user_id!r} does not fit the data's {self._user_ids.dtype} ids."
            )
        if key in set(self._user_ids.tolist()):
            raise ValueError(f"User id {user_id!r} already exists in {self._name}.")
        return key

    # ---- plain-array round trip -------------------------------------------------------------

    def to_arrays(self, prefix: str = "data_", *, include_matrix: bool = True) -> dict:
        """Return the id maps, titles (and matrix) as plain numpy arrays, no objects.

        The result can go straight into ``np.savez(path, **arrays)`` and be read back with
        ``np.load(path, allow_pickle=False)`` and :meth:`from_arrays`.

        Parameters
        ----------
        prefix : str, default "data_"
            Prepended to every key, so the arrays can share a file with a model's.
        include_matrix : bool, default True
            Also store the CSR (``indptr``, ``indices``, ``weights``, ``shape``).

        Returns
        -------
        dict of str to numpy.ndarray
            int64, float32 and unicode (``"U"``) arrays only.
        """
        titles = self._item_titles if self._item_titles is not None else np.zeros(0, dtype="U1")
        arrays = {
            "user_ids": self._user_ids,
            "item_ids": self._item_ids,
            "item_titles": titles,
            "name": np.asarray(self._name, dtype=str),
            "unit": np.asarray(self._unit, dtype=str),
            "history": np.asarray(self._history, dtype=str).reshape(-1),
            "counts": np.asarray([self._n_duplicates, self._n_bad_lines], dtype=np.int64),
            "shape": np.asarray(self.shape, dtype=np.int64),
        }
        if include_matrix:
            arrays["indptr"] = self._user_items.indptr.astype(np.int64)
            arrays["indices"] = self._user_items.indices.astype(np.int64)
            arrays["weights"] = self._user_items.data
        return {prefix + key: np.array(value) for key, value in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: Mapping, prefix: str = "data_") -> Interactions:
        """Rebuild an :class:`Interactions` from :meth:`to_arrays` output.

        Parameters
        ----------
        arrays : mapping of str to numpy.ndarray
            E.g. the ``NpzFile`` returned by ``np.load(path, allow_pickle=False)``.
        prefix : str, default "data_"
            The prefix given to :meth:`to_arrays`.

        Returns
        -------
        Interactions
            Without stored matrix arrays, the matrix is empty with the right shape.

        Raises
        ------
        KeyError
            A required array is missing.
        """

        def get(key, default=None):
            return arrays[prefix + key] if prefix + key in arrays else default

        if get("user_ids") is None or get("item_ids") is None:
            raise KeyError(f"No {prefix}user_ids / {prefix}item_ids arrays to rebuild from.")
        user_ids, item_ids = np.asarray(get("user_ids")), np.asarray(get("item_ids"))
        shape = (user_ids.size, item_ids.size)
        if get("indptr") is not None:
            matrix = sp.csr_matrix((get("weights"), get("indices"), get("indptr")), shape=shape)
        else:
            matrix = sp.csr_matrix(shape, dtype=np.float32)
        titles = get("item_titles")
        counts = get("counts", np.zeros(2, dtype=np.int64))
        return cls(
            matrix,
            user_ids,
            item_ids,
            titles if titles is not None and titles.size else None,
            name=str(get("name", "data")),
            unit=str(get("unit", "interactions")),
            n_duplicates=int(counts[0]),
            n_bad_lines=int(counts[1]),
            history=[str(h) for h in get("history", [])],
        )


def _coerce_key(key, ids: np.ndarray):
    """Turn a lookup key into the Python type of ``ids``; None when it cannot be one."""
    key = _scalar(key)
    if ids.dtype.kind in "iu":
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            return key
        if isinstance(key, str) and _SPACED_INTEGER.fullmatch(key):
            return int(key)
        return None
    return key if isinstance(key, str) else str(key)


def _id_range(ids: np.ndarray) -> str:
    if ids.size and ids.dtype.kind in "iu":
        return f", ids {ids.min()}..{ids.max()}"
    return ""


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
    path = _check_file(Path(path))
    _check_rules(on_bad_lines, duplicates)
    label = name or path.name
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = _read_parquet(path)
        return from_dataframe(
            frame, user_col, item_col, weight_col, name=label, titles=titles,
            on_bad_lines=on_bad_lines, duplicates=duplicates, _source=str(path),
        )  # fmt: skip
    text = _read_text(path, encoding)
    if not text.strip():
        raise EmptyDataError(f"{path} is empty.")
    records, weight = _parse_table(text, path, user_col, item_col, weight_col, sep, on_bad_lines)
    return _records_to_interactions(
        records, path, label, "interactions", titles, duplicates, weighted=weight is not None
    )


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
    _source: str | None = None,
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
    duplicates : {"sum", "max", "first", "last", "error"}, default "sum"
        How repeated (user, item) rows are merged.

    Returns
    -------
    Interactions

    Raises
    ------
    UnknownColumnError, DataFormatError, EmptyDataError
    """
    _check_rules(on_bad_lines, duplicates)
    where = _source or f"the DataFrame {name!r}"
    columns = list(frame.columns)
    user = _pick_column(columns, user_col, _USER_NAMES, "user", where)
    item = _pick_column(columns, item_col, _ITEM_NAMES, "item", where)
    weight = _find_weight(columns, weight_col, where)
    if title_col is not None:
        _pick_column(columns, title_col, (), "title", where)
        pairs = frame[[item, title_col]].dropna().drop_duplicates(subset=item)
        titles = {
            **dict(zip(pairs[item].map(_scalar), pairs[title_col].astype(str), strict=True)),
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
    records = _Records(
        _frame_ids(frame[user]), _frame_ids(frame[item]),
        weights.to_numpy(dtype=np.float64, na_value=np.nan), n_bad, first_bad,
    )  # fmt: skip
    return _records_to_interactions(
        records, where, name, "interactions", titles, duplicates, weighted=weight is not None
    )


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
    records, ratings, titles = _read_layout(folder_or_file, layout, on_bad_lines)
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
    **table_options,
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
    **table_options
        ``sep``, ``encoding``, ``titles`` (and ``title_col`` for DataFrames).

    Returns
    -------
    Interactions

    Raises
    ------
    FileNotFoundError
        A path does not exist (:class:`DatasetNotFoundError` for a known name not found).
    UnknownDatasetError
        ``source`` is neither a path nor a known name.
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
    if isinstance(source, pd.DataFrame):
        return from_dataframe(
            source, **columns, name=name or "DataFrame", **common, **table_options
        )
    path = Path(source)
    if not path.exists():
        if isinstance(source, str) and _is_dataset_name(source):
            dataset = _dataset(source)
            folder = find_dataset(source, download=download)
            return _load_layout(folder, _LAYOUTS[dataset.layout], name or dataset.name, **common)
        if isinstance(source, str) and os.sep not in source and "." not in source:
            _dataset(source)  # raises UnknownDatasetError listing the names
        _check_file(path)
    given_columns = any(v is not None for v in columns.values())
    if path.is_dir():
        return _load_layout(path, _layout_of_folder(path), name or _dataset_name_of(path), **common)
    layout = _layout_of_file(path)
    if layout is not None and not given_columns and not table_options:
        return _load_layout(path, layout, name or _dataset_name_of(path.parent), **common)
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
    if not path.exists() and _is_dataset_name(str(source)):
        path = find_dataset(str(source))
    return _read_users(path)
