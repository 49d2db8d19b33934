"""The :class:`Interactions` object: a users x items weight matrix with its raw-id maps.

An :class:`Interactions` holds a ``scipy.sparse.csr_matrix`` of float32 weights in canonical
form (sorted indices, no duplicates, no stored zeros), the raw id of each row and column, and
the item titles where the data set has them. It looks ids and titles up (through
:mod:`als.lookups`, which also suggests close titles), filters, adds a new user, and
round-trips through plain numpy arrays. It never changes after construction:
:meth:`Interactions.filter` and :meth:`Interactions.add_user` return new objects.

Building one from files, tables and DataFrames is :mod:`als.data`, which also re-exports it.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from als.errors import (
    DataFormatError,
    EmptyDataError,
    InvalidValueError,
    MissingDataError,
    UnknownItemError,
    UnknownUserError,
)
from als.lookups import IdIndex, TitleIndex, python_scalar
from als.validation import check_choice, check_user_items

__all__ = ["Interactions"]


def _index_dtype(*sizes: int) -> type:
    return np.int32 if max(sizes, default=0) < np.iinfo(np.int32).max else np.int64


def csr_from_entries(rows, cols, data, shape) -> sp.csr_matrix:
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


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.flags.writeable = False
    return array


def _check_ids(ids, what: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iuU":
        raise InvalidValueError(f"{what} must be a 1-d array of integers or str; got {ids.dtype}.")
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    if np.unique(ids).size != ids.size:
        raise InvalidValueError(f"{what} holds repeated ids.")
    return ids


def _stored(attribute: str, doc: str) -> property:
    """A read-only property giving ``self.<attribute>``, which only the constructor sets."""
    return property(operator.attrgetter(attribute), doc=doc)


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
        # float32 CSR with sorted indices, no duplicates and no stored zeros
        matrix = check_user_items(
            user_items, "user_items", warn=False, finite=False, drop_zeros=True
        )
        user_ids, item_ids = _check_ids(user_ids, "user_ids"), _check_ids(item_ids, "item_ids")
        if matrix.shape != (user_ids.size, item_ids.size):
            raise InvalidValueError(
                f"user_items has shape {matrix.shape} but there are {user_ids.size} user ids "
                f"and {item_ids.size} item ids."
            )
        if item_titles is not None:
            item_titles = np.asarray(item_titles, dtype=str)
            if item_titles.shape != item_ids.shape:
                raise InvalidValueError(
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

    # ---- read-only views: set once, by the constructor ----------------------------------

    user_items = _stored("_user_items", "The users x items float32 CSR matrix of weights.")
    user_ids = _stored("_user_ids", "Raw user id of each row (read-only int64 or str array).")
    item_ids = _stored("_item_ids", "Raw item id of each column (read-only int64 or str array).")
    item_titles = _stored(
        "_item_titles",
        'Title of each column (``""`` where unknown), or None when the data has no titles.',
    )
    name = _stored("_name", "What the data set is called in messages.")
    unit = _stored("_unit", 'What one stored entry is ("ratings", "interactions").')
    n_duplicates = _stored("_n_duplicates", "Duplicate (user, item) rows merged while loading.")
    n_bad_lines = _stored(
        "_n_bad_lines", 'Bad lines skipped while loading (``on_bad_lines="skip"``).'
    )
    history = _stored("_history", "What was done to the data, one sentence per step.")

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

    # ---- id and title lookups --------------------------------------------------------------

    @cached_property
    def _users(self) -> IdIndex:
        return IdIndex(self._user_ids, "user")

    @cached_property
    def _items(self) -> IdIndex:
        return IdIndex(self._item_ids, "item")

    @cached_property
    def _titles(self) -> TitleIndex:
        return TitleIndex(self._item_titles, self._item_ids, self._name)

    def user_index(self, user_id) -> int:
        """Return the row of raw user id ``user_id``.

        Integer ids may be given as digit strings (``"42"``) and str ids as ints.

        Raises
        ------
        UnknownUserError
            The id is not in the data.
        """
        row = self._users.find(user_id)
        if row is None:
            raise UnknownUserError(self._users.unknown(user_id, self._name))
        return row

    def item_index(self, item_id) -> int:
        """Return the column of raw item id ``item_id``.

        Raises
        ------
        UnknownItemError
            The id is not in the data.
        """
        column = self._items.find(item_id)
        if column is None:
            raise UnknownItemError(self._items.unknown(item_id, self._name), key=item_id)
        return column

    def user_id(self, row: int):
        """Return the raw id (int or str) of user row ``row``."""
        return python_scalar(self._user_ids[row])

    def item_id(self, column: int):
        """Return the raw id (int or str) of item column ``column``."""
        return python_scalar(self._item_ids[column])

    def item_title(self, column: int) -> str:
        """Return the title of item column ``column``, or its raw id as text when unknown."""
        title = "" if self._item_titles is None else str(self._item_titles[column])
        return title or str(self.item_id(column))

    def title_index(self, title: str) -> int:
        """Return the column of the item called ``title``.

        The title is matched exactly first, then ignoring case and surrounding spaces, then
        loosely: without its year and without a leading or trailing article, so "Matrix",
        "the matrix" and "Matrix (1999)" find "Matrix, The (1999)" when only one film fits.

        Raises
        ------
        UnknownItemError
            No item has this title; the message lists up to five close matches.
        AmbiguousItemError
            Several items have this title (their raw ids) or fit it loosely (their titles).
        """
        return self._titles.find(title)

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
        check_choice(by, ("auto", "id", "title"), "by")
        if by == "title":
            return self.title_index(str(key))
        if by == "id" or not isinstance(key, str) or self._item_titles is None:
            return self.item_index(key)
        column = self._items.find(key)
        if column is not None and not self._titles.is_title(key):
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
                raise InvalidValueError(f"{label} must be an integer >= 1; got {value!r}.")
        rows, cols, data, keep_users, keep_items = _surviving_entries(
            self._user_items, min_weight, min_user_interactions, min_item_interactions, iterate
        )
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
        kept = csr_from_entries(new_row[rows], new_col[cols], data, shape)
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
            raise InvalidValueError("A new user needs at least one liked item.")
        repeated = {c for c in columns if columns.count(c) > 1}
        if repeated:
            names = ", ".join(repr(self.item_title(c)) for c in sorted(repeated))
            raise InvalidValueError(f"Liked items are listed more than once: {names}.")
        values = np.asarray(weights, dtype=np.float64)
        if values.ndim == 0:
            values = np.full(len(columns), float(values))
        if values.shape != (len(columns),):
            raise InvalidValueError(f"Got {values.size} weights for {len(columns)} liked items.")
        if not np.isfinite(values).all() or (values == 0).any():
            raise InvalidValueError("Weights of liked items must be finite and non-zero.")
        order = np.argsort(columns)
        return csr_from_entries(
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
        items = "item" if row.nnz == 1 else "items"
        note = f"added user {new_id!r} with {row.nnz} liked {items}"
        return self._derive(matrix, user_ids, self._item_ids, self._item_titles, note)

    def _new_user_id(self, user_id):
        if user_id is None:
            if self._user_ids.dtype.kind == "i":
                return int(self._user_ids.max()) + 1
            n = 1
            while (candidate := "new-user" + (f"-{n}" if n > 1 else "")) in self._users:
                n += 1
            return candidate
        key = self._users.key(user_id)
        if key is None:
            raise InvalidValueError(
                f"User id {user_id!r} does not fit the data's {self._user_ids.dtype} ids."
            )
        if key in self._users:
            raise InvalidValueError(f"User id {user_id!r} already exists in {self._name}.")
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

        return cls(**_saved_arguments(arrays, prefix))


def _surviving_entries(matrix, min_weight, min_user_interactions, min_item_interactions, iterate):
    """The entries (rows, cols, data) and the users and items (masks) that a filter keeps."""
    n_users, n_items = matrix.shape
    rows = np.repeat(np.arange(n_users), np.diff(matrix.indptr))
    cols, data = matrix.indices, matrix.data
    keep_users = np.ones(n_users, dtype=bool)
    keep_items = np.ones(n_items, dtype=bool)
    if min_weight is not None:
        strong = data >= min_weight
        rows, cols, data = rows[strong], cols[strong], data[strong]
    while True:
        user_counts = np.bincount(rows, minlength=n_users)
        item_counts = np.bincount(cols, minlength=n_items)
        drop_users = keep_users & (user_counts < min_user_interactions)
        drop_items = keep_items & (item_counts < min_item_interactions)
        keep_users &= ~drop_users
        keep_items &= ~drop_items
        entries = keep_users[rows] & keep_items[cols]
        rows, cols, data = rows[entries], cols[entries], data[entries]
        if not iterate or not (drop_users.any() or drop_items.any()):
            break
    # Users/items with no entries at all (e.g. after iterate=False) go too.
    keep_users &= np.bincount(rows, minlength=n_users) > 0
    keep_items &= np.bincount(cols, minlength=n_items) > 0
    return rows, cols, data, keep_users, keep_items


def _saved_arguments(arrays: Mapping, prefix: str) -> dict:
    """The constructor's arguments held by :meth:`Interactions.to_arrays` output, checked."""

    def get(key, default=None):
        return arrays[prefix + key] if prefix + key in arrays else default

    if get("user_ids") is None or get("item_ids") is None:
        raise MissingDataError(f"No {prefix}user_ids / {prefix}item_ids arrays to rebuild from.")
    user_ids, item_ids = np.asarray(get("user_ids")), np.asarray(get("item_ids"))
    shape = (user_ids.size, item_ids.size)
    stored_shape = get("shape")
    if stored_shape is not None and np.asarray(stored_shape).reshape(-1).tolist() != list(shape):
        raise DataFormatError(
            f"The saved interactions are corrupted: shape {np.asarray(stored_shape)} but "
            f"{shape[0]} user ids and {shape[1]} item ids."
        )
    if get("indptr") is not None:
        matrix = _matrix_from_arrays(get("indptr"), get("indices"), get("weights"), shape)
    else:
        matrix = sp.csr_matrix(shape, dtype=np.float32)
    titles = get("item_titles")
    counts = get("counts", np.zeros(2, dtype=np.int64))
    return {
        "user_items": matrix,
        "user_ids": user_ids,
        "item_ids": item_ids,
        "item_titles": titles if titles is not None and titles.size else None,
        "name": str(get("name", "data")),
        "unit": str(get("unit", "interactions")),
        "n_duplicates": int(counts[0]),
        "n_bad_lines": int(counts[1]),
        "history": [str(h) for h in get("history", [])],
    }


def _matrix_from_arrays(indptr, indices, weights, shape) -> sp.csr_matrix:
    """The CSR matrix of saved arrays, after checking that they describe one of ``shape``."""
    n_users, n_items = shape
    indptr, indices, weights = (np.asarray(a) for a in (indptr, indices, weights))
    problem = None
    if indptr.ndim != 1 or indptr.dtype.kind not in "iu" or indptr.size != n_users + 1:
        problem = f"indptr is {indptr.dtype} {indptr.shape}, expected {n_users + 1} integers"
    elif indices.ndim != 1 or indices.dtype.kind not in "iu":
        problem = f"indices are {indices.dtype} {indices.shape}, expected integers"
    elif weights.ndim != 1 or weights.dtype.kind not in "iuf" or weights.size != indices.size:
        problem = f"weights are {weights.dtype} {weights.shape}, expected {indices.size} numbers"
    elif indptr[0] != 0 or indptr[-1] != indices.size or (np.diff(indptr) < 0).any():
        problem = f"indptr does not describe {indices.size} entries in {n_users} rows"
    elif indices.size and (indices.min() < 0 or indices.max() >= n_items):
        bad = indices[(indices < 0) | (indices >= n_items)][0]
        problem = f"item column {bad} is out of range for {n_items} item ids"
    elif not np.isfinite(weights).all():
        problem = "some weights are NaN or infinite"
    if problem is not None:
        raise DataFormatError(f"The saved interactions are corrupted: {problem}.")
    return sp.csr_matrix((weights, indices, indptr), shape=shape)
