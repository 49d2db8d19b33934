"""The :class:`Interactions` object: a users x items weight matrix with its raw-id maps.

An :class:`Interactions` holds a ``scipy.sparse.csr_matrix`` of float32 weights in canonical
form (sorted indices, no duplicates, no stored zeros), the raw id of each row and column, and
the item titles where the data set has them. It looks ids and titles up (with close-match
suggestions), filters, adds a new user, and round-trips through plain numpy arrays. It never
changes after construction: :meth:`Interactions.filter` and :meth:`Interactions.add_user`
return new objects.

Building one from files, tables and DataFrames is :mod:`als.data`, which also re-exports it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from als.errors import (
    AmbiguousItemError,
    EmptyDataError,
    InvalidValueError,
    MissingDataError,
    UnknownItemError,
    UnknownUserError,
)
from als.readers import SPACED_INTEGER
from als.validation import check_choice, check_user_items

__all__ = ["Interactions"]


# --------------------------------------------------------------------------------------------
# Helpers shared with als.data: CSR building and scalars.
# --------------------------------------------------------------------------------------------


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


def python_scalar(value):
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
        raise InvalidValueError(f"{what} must be a 1-d array of integers or str; got {ids.dtype}.")
    if ids.dtype.kind in "iu":
        ids = ids.astype(np.int64)
    if np.unique(ids).size != ids.size:
        raise InvalidValueError(f"{what} holds repeated ids.")
    return ids


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
            self._user_lookup = {python_scalar(u): row for row, u in enumerate(self._user_ids)}
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
            self._item_lookup = {python_scalar(i): col for col, i in enumerate(self._item_ids)}
        return self._item_lookup

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
        exact, folded, loose = self._titles()
        matches = exact.get(title) or folded.get(title.strip().casefold())
        if not matches and _query_key(title) in loose:
            matches = loose[_query_key(title)]
            if len(matches) > 1:
                titles = sorted(str(self._item_titles[c]) for c in matches)
                shown = "; ".join(titles[:10]) + ("; ..." if len(titles) > 10 else "")
                raise AmbiguousItemError(
                    f"{len(titles)} items in {self._name} fit {title!r}: {shown}; "
                    "give the full title.",
                    key=title,
                    candidates=[self.item_id(c) for c in matches],
                )
        if not matches:
            suggestions = self._close_titles(title)
            hint = f"; did you mean: {'; '.join(suggestions)}?" if suggestions else ""
            raise UnknownItemError(
                f"No item titled {title!r} in {self._name}{hint}",
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

    def _titles(self) -> tuple[dict, dict, dict]:
        if self._title_lookup is None:
            exact, folded, loose = {}, {}, {}
            for column, title in enumerate(() if self._item_titles is None else self._item_titles):
                if title:
                    exact.setdefault(str(title), []).append(column)
                    folded.setdefault(str(title).strip().casefold(), []).append(column)
                    for key in _loose_keys(str(title)):
                        loose.setdefault(key, []).append(column)
            self._title_lookup = (exact, folded, loose)
        return self._title_lookup

    def _close_titles(self, title: str) -> list[str]:
        exact, folded, loose = self._titles()
        query, key = title.strip().casefold(), _query_key(title)
        # titles that go on from what was typed ("star wars" -> "Star Wars: Episode IV ...")
        close = [loose[c] for c in sorted(loose) if key and re.match(rf"{re.escape(key)}\W", c)]
        close += [folded[c] for c in difflib.get_close_matches(query, list(folded), 5, 0.6)]
        close += [loose[c] for c in difflib.get_close_matches(key, list(loose), 5, 0.75)]
        if not close and key:
            # a misspelt start of a long title ("star warz" for "Star Wars: Episode IV ...")
            starts = {}
            for loose_key, columns in loose.items():
                starts.setdefault(loose_key[: len(key)], []).extend(columns)
            close = [starts[c] for c in difflib.get_close_matches(key, list(starts), 3, 0.8)]
        suggestions = []
        for columns in close:
            for column in columns:
                name = str(self._item_titles[column])
                if name not in suggestions:
                    suggestions.append(name)
        return suggestions[:5]

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
                raise InvalidValueError(f"{label} must be an integer >= 1; got {value!r}.")
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
            raise InvalidValueError(
                f"User id {user_id!r} does not fit the data's {self._user_ids.dtype} ids."
            )
        if key in set(self._user_ids.tolist()):
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

        def get(key, default=None):
            return arrays[prefix + key] if prefix + key in arrays else default

        if get("user_ids") is None or get("item_ids") is None:
            raise MissingDataError(
                f"No {prefix}user_ids / {prefix}item_ids arrays to rebuild from."
            )
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


_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_ARTICLES = r"(?:the|a|an|la|le|les|l'|il|el|der|die|das)"
_TRAILING_ARTICLE = re.compile(rf",\s*{_ARTICLES}(?=\s*\(|$)")
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+")
_PARENTHESES = re.compile(r"\s*\([^)]*\)")


def _without_article(text: str) -> str:
    """Drop a leading or trailing article: "matrix, the" and "the matrix" give "matrix"."""
    text = _TRAILING_ARTICLE.sub("", text.strip(), count=1)
    return _LEADING_ARTICLE.sub("", text).strip()


def _query_key(title: str) -> str:
    """The loose form of a title someone typed: no article, its year kept if given."""
    text = title.strip().casefold()
    year = _YEAR.search(text)
    base = _without_article(text[: year.start()] if year else text)
    return f"{base} ({year.group(1)})" if year else base


def _loose_keys(title: str) -> set[str]:
    """The loose forms a title answers to: with and without its year and alternative title."""
    text = title.strip().casefold()
    year = _YEAR.search(text)
    base = text[: year.start()] if year else text
    keys = set()
    for form in {base, _PARENTHESES.sub("", base)}:
        form = _without_article(form)
        keys.add(form)
        if year:
            keys.add(f"{form} ({year.group(1)})")
    return keys


def _coerce_key(key, ids: np.ndarray):
    """Turn a lookup key into the Python type of ``ids``; None when it cannot be one."""
    key = python_scalar(key)
    if ids.dtype.kind in "iu":
        if isinstance(key, bool):
            return None
        if isinstance(key, int):
            return key
        if isinstance(key, str) and SPACED_INTEGER.fullmatch(key):
            return int(key)
        return None
    return key if isinstance(key, str) else str(key)


def _id_range(ids: np.ndarray) -> str:
    if ids.size and ids.dtype.kind in "iu":
        return f", ids {ids.min()}..{ids.max()}"
    return ""
