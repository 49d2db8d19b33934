"""Finding rows and columns by key: raw user and item ids, and item titles.

:class:`IdIndex` maps the raw ids of one side (users or items) to their positions, reading a
digit string as an integer id and an int as a str id. :class:`TitleIndex` finds an item's
column by its title: exactly, then ignoring case and surrounding spaces, then loosely (without
its year and without a leading or trailing article), and suggests close titles when nothing
fits. :class:`als.interactions.Interactions` builds both on first use.
"""

from __future__ import annotations

import difflib
import re

import numpy as np

from als.errors import AmbiguousItemError, UnknownItemError
from als.readers import SPACED_INTEGER

__all__ = ["IdIndex", "TitleIndex", "python_scalar"]


def python_scalar(value):
    """A numpy scalar as the plain Python int or str it stands for."""
    return value.item() if isinstance(value, np.generic) else value


class IdIndex:
    """The position of each raw id of one side, and what to say when an id is not there.

    Parameters
    ----------
    ids : numpy.ndarray
        Raw ids (int64 or str), without repeats; position ``p`` holds ``ids[p]``.
    side : {"user", "item"}
        Whose ids they are, for messages.
    """

    def __init__(self, ids: np.ndarray, side: str):
        self._ids = ids
        self._side = side
        self._positions = {python_scalar(raw): position for position, raw in enumerate(ids)}

    def key(self, raw):
        """Return ``raw`` as the Python type of the ids (int or str), or None when it cannot be.

        Integer ids accept ints and digit strings (``"42"``, not ``True``); str ids accept
        anything, as its text.
        """
        raw = python_scalar(raw)
        if self._ids.dtype.kind in "iu":
            if isinstance(raw, bool):
                return None
            if isinstance(raw, int):
                return raw
            if isinstance(raw, str) and SPACED_INTEGER.fullmatch(raw):
                return int(raw)
            return None
        return raw if isinstance(raw, str) else str(raw)

    def find(self, raw) -> int | None:
        """Return the position of raw id ``raw``, or None when it is not one of the ids."""
        return self._positions.get(self.key(raw))

    def __contains__(self, raw) -> bool:
        return self.find(raw) is not None

    def unknown(self, raw, data_name: str) -> str:
        """Return the message for a missing id: ``"Unknown user id 99 in ml-1m (6,040 users,
        ids 1..6040)."`` (the range for integer ids only)."""
        ids = self._ids
        id_range = f", ids {ids.min()}..{ids.max()}" if ids.size and ids.dtype.kind in "iu" else ""
        return (
            f"Unknown {self._side} id {raw!r} in {data_name} "
            f"({ids.size:,} {self._side}s{id_range})."
        )


class TitleIndex:
    """The columns of the items by title, exact and loose, with close-match suggestions.

    Parameters
    ----------
    titles : numpy.ndarray of str or None
        Title of each column (``""`` where unknown); None when the data has no titles.
    item_ids : numpy.ndarray
        Raw id of each column, named when a title fits several items.
    data_name : str
        What the data is called in messages.
    """

    def __init__(self, titles: np.ndarray | None, item_ids: np.ndarray, data_name: str):
        self._titles = titles
        self._item_ids = item_ids
        self._data_name = data_name
        self._exact, self._folded, self._loose = {}, {}, {}
        for column, title in enumerate(() if titles is None else titles):
            if title:
                self._exact.setdefault(str(title), []).append(column)
                self._folded.setdefault(str(title).strip().casefold(), []).append(column)
                for key in _loose_keys(str(title)):
                    self._loose.setdefault(key, []).append(column)

    def is_title(self, text: str) -> bool:
        """True when some item's title is exactly ``text``."""
        return text in self._exact

    def find(self, title: str) -> int:
        """Return the column of the item called ``title``, as :meth:`Interactions.title_index`
        describes (and with the errors it lists)."""
        matches = self._exact.get(title) or self._folded.get(title.strip().casefold())
        if not matches and _query_key(title) in self._loose:
            matches = self._loose[_query_key(title)]
            if len(matches) > 1:
                titles = sorted(str(self._titles[c]) for c in matches)
                shown = "; ".join(titles[:10]) + ("; ..." if len(titles) > 10 else "")
                raise AmbiguousItemError(
                    f"{len(titles)} items in {self._data_name} fit {title!r}: {shown}; "
                    "give the full title.",
                    key=title,
                    candidates=[python_scalar(self._item_ids[c]) for c in matches],
                )
        if not matches:
            suggestions = self.close_titles(title)
            hint = f"; did you mean: {'; '.join(suggestions)}?" if suggestions else ""
            raise UnknownItemError(
                f"No item titled {title!r} in {self._data_name}{hint}",
                key=title,
                suggestions=suggestions,
            )
        if len(matches) > 1:
            ids = [python_scalar(self._item_ids[c]) for c in matches]
            raise AmbiguousItemError(
                f"{len(ids)} items in {self._data_name} are titled {title!r} (ids "
                f"{', '.join(map(repr, ids))}); pass the raw item id instead.",
                key=title,
                candidates=ids,
            )
        return matches[0]

    def close_titles(self, title: str) -> list[str]:
        """Return up to five titles close to ``title``, closest first."""
        folded, loose = self._folded, self._loose
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
                name = str(self._titles[column])
                if name not in suggestions:
                    suggestions.append(name)
        return suggestions[:5]


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
