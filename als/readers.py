"""Reading rating files: MovieLens / Last.fm layouts and generic CSV, TSV and Parquet tables.

This module turns files into raw records (user ids, item ids, weights) and title maps; it does
not build matrices (that is :mod:`als.data`) and does not find or download data sets (that is
:mod:`als.datasets`). It knows the on-disk layout of each family of data sets (ml-1m ``::``
files, ml-100k tab and ``|`` files, the Last.fm HetRec 2011 header/CRLF files, MovieLens CSVs),
reads plain or gzip-compressed text, and parses it with pandas' C parser, falling back to a
line-by-line scan that reports (or skips and counts) each bad line with its number and text.
:func:`read_titles_table` reads a plain ``item id, title`` table (the CLI's ``--titles``).

The errors it raises (:class:`DataFormatError`, :class:`UnknownColumnError`) are in
:mod:`als.errors`.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from als.errors import (
    DataError,  # noqa: F401 (importable from here too)
    DataFormatError,
    EmptyDataError,
    UnknownColumnError,
)
from als.registry import Layout, layouts

_INTEGER = re.compile(r"[+-]?\d+")
SPACED_INTEGER = re.compile(r"\s*[+-]?\d+\s*")


# --------------------------------------------------------------------------------------------
# File layouts of the data sets als knows (built from the registry: als.registry).
# --------------------------------------------------------------------------------------------


def ratings_file(folder: Path, layout: Layout) -> Path | None:
    """Return the first of the layout's ratings files present in ``folder``."""
    for file_name in layout.ratings:
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def layout_of_file(path: Path) -> Layout | None:
    for layout in layouts().values():
        if path.name in layout.ratings:
            return layout
    return None


def layout_of_folder(folder: Path) -> Layout:
    for layout in layouts().values():
        if ratings_file(folder, layout) is not None:
            return layout
    expected = ", ".join(n for layout in layouts().values() for n in layout.ratings)
    raise FileNotFoundError(2, f"No ratings file ({expected}) in the data folder", str(folder))


# --------------------------------------------------------------------------------------------
# Reading text tables, with a fast pandas path and a line-by-line path that finds bad lines.
# --------------------------------------------------------------------------------------------


def check_file(path: Path) -> Path:
    """``path`` if it is a regular file (symlinks followed): never a directory, FIFO or device."""
    if not path.is_file():
        if os.path.exists(path):
            reason = "Not a data file: not a regular file (a directory, FIFO or device)"
        else:
            reason = "No such data file"
        raise FileNotFoundError(2, reason, str(path))
    return path


_UTF8_BOM = b"\xef\xbb\xbf"


def read_text(path: Path, encoding: str) -> str:
    """Read a whole (possibly gzip-compressed) text file, naming the file on decode errors.

    A UTF-8 byte-order mark is dropped, and declares the file UTF-8 whatever ``encoding``.
    """
    raw = check_file(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataFormatError(
                f"{path} is a damaged gzip file ({exc}): it is truncated or corrupted.",
                path=str(path),
            ) from None
    if raw.startswith(_UTF8_BOM):
        raw, encoding = raw[len(_UTF8_BOM) :], "utf-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line_number = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(
            f"{path}, line {line_number}: bytes that are not valid {encoding} "
            "(pass the file's encoding, e.g. encoding='iso-8859-1').",
            path=str(path),
            line_number=line_number,
        ) from None


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its CR/LF ending)."""
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.rstrip("\r")


def _split(line: str, sep: str, quoted: bool) -> list[str]:
    if quoted:
        try:
            return next(csv.reader([line], delimiter=sep), [])
        except csv.Error as exc:  # e.g. a field over the csv module's size limit
            raise ValueError(f"the line cannot be read as CSV ({exc})") from None
    return line.split(sep)


def _title_of(fields: list[str], width: int, sep: str) -> str:
    """The title (second field) of a line of ``width`` fields; a line with more fields has
    the separator inside its title, which takes the extra fields back."""
    extra = max(0, len(fields) - width)
    return sep.join(fields[1 : 2 + extra]).strip()


@dataclass(frozen=True)
class _TableSpec:
    """What to read from a delimited text file: separator, header and the three columns."""

    sep: str
    header: bool
    quoted: bool
    user: str | int
    item: str | int
    weight: str | int | None
    fields: tuple[int, ...] | None = None  # allowed field counts (None: as many as the header)
    int_ids: bool = False


@dataclass
class Records:
    """Parsed rows: raw ids, weights, and how many lines were skipped as bad."""

    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    n_bad: int = 0
    first_bad: str | None = None


def _header(text: str, sep: str, quoted: bool) -> list[str]:
    """The column names on the first line of ``text``, stripped of spaces."""
    first = text.split("\n", 1)[0].rstrip("\r")
    return [name.strip() for name in _split(first, sep, quoted)]


def _header_fields(text: str, spec: _TableSpec, path: Path) -> list[str]:
    names = _header(text, spec.sep, spec.quoted)
    for column in (spec.user, spec.item, spec.weight):
        if column is not None:
            pick_column(names, column, (), "", path)  # raises UnknownColumnError when absent
    return names


def _parse_text(text: str, spec: _TableSpec, path: Path, on_bad_lines: str) -> Records:
    """Parse a delimited text with pandas' C parser; fall back to a line scan on any doubt."""
    names = _header_fields(text, spec, path) if spec.header else None
    frame = _fast_parse(text, spec, names)
    if frame is not None:
        return frame
    return _scan(text, spec, path, names, on_bad_lines)


def _fast_parse(text: str, spec: _TableSpec, names: list[str] | None) -> Records | None:
    """Parse with pandas; return None unless every value is present and well formed."""
    sep = "\t" if spec.sep == "::" else spec.sep
    body = text.replace("::", "\t") if spec.sep == "::" else text
    if names is None:
        width = max(spec.fields or (3,))
        columns: list = list(range(width))
    else:
        columns = names
    try:
        with warnings.catch_warnings():
            # A first line longer than ``names`` only warns (and loses fields): make it fail.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # Mixed-type columns fail the checks below and go to the line scan anyway.
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)
            frame = pd.read_csv(
                io.StringIO(body),
                sep=sep,
                header=0 if spec.header else None,
                names=columns,
                index_col=False,
                quoting=csv.QUOTE_MINIMAL if spec.quoted else csv.QUOTE_NONE,
                skip_blank_lines=True,
                engine="c",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError, IndexError):
        return None
    users, items = _id_values(frame[spec.user], spec), _id_values(frame[spec.item], spec)
    if users is None or items is None:
        return None
    if spec.weight is None:
        weights = np.ones(len(frame))
    else:
        column = frame[spec.weight]
        if column.dtype.kind not in "iuf":
            return None
        weights = column.to_numpy(dtype=np.float64)
        if not np.isfinite(weights).all():
            return None
    return Records(users, items, weights)


def _id_values(column: pd.Series, spec: _TableSpec) -> np.ndarray | None:
    """Return ids as int64 or str values, or None when the column needs a line scan."""
    if column.dtype.kind in "iu":
        return column.to_numpy(dtype=np.int64)
    if spec.int_ids or column.dtype.kind == "f" or column.isna().any():
        return None
    values = column.astype(str).str.strip()
    if (values == "").any():
        return None
    return np.asarray(values, dtype=str)


def _scan(
    text: str, spec: _TableSpec, path: Path, names: list[str] | None, on_bad_lines: str
) -> Records:
    """Check every line; raise on the first bad one, or skip and count bad ones."""
    positions = _positions(spec, names)
    allowed = spec.fields if names is None else (len(names),)
    users, items, weights = [], [], []
    n_bad, first_bad = 0, None
    for number, line in _lines(text):
        if (number == 1 and spec.header) or not line.strip():
            continue
        try:
            fields = _split(line, spec.sep, spec.quoted)
            user, item, weight = _check_fields(fields, allowed, positions, spec)
        except ValueError as exc:
            message = f"{path}, line {number}: {exc}: {line[:200]!r}."
            if on_bad_lines == "error":
                raise DataFormatError(
                    message, path=str(path), line_number=number, line=line
                ) from None
            n_bad += 1
            first_bad = first_bad or message
            continue
        users.append(user)
        items.append(item)
        weights.append(weight)
    return Records(
        _ids_from_strings(users, spec.int_ids),
        _ids_from_strings(items, spec.int_ids),
        np.asarray(weights, dtype=np.float64),
        n_bad,
        first_bad,
    )


def _positions(spec: _TableSpec, names: list[str] | None) -> tuple[int, int, int | None]:
    if names is None:
        return int(spec.user), int(spec.item), None if spec.weight is None else int(spec.weight)
    weight = None if spec.weight is None else names.index(spec.weight)
    return names.index(spec.user), names.index(spec.item), weight


def _check_fields(fields, allowed, positions, spec) -> tuple[str, str, float]:
    """Validate one line's fields; raise ValueError saying what is wrong."""
    if allowed is not None and len(fields) not in allowed:
        expected = " or ".join(str(n) for n in allowed)
        raise ValueError(
            f"expected {expected} fields separated by {spec.sep!r}, found {len(fields)}"
        )
    user_at, item_at, weight_at = positions
    user, item = fields[user_at].strip(), fields[item_at].strip()
    for label, value in (("user", user), ("item", item)):
        if not value:
            raise ValueError(f"the {label} id is empty")
        if spec.int_ids and not _INTEGER.fullmatch(value):
            raise ValueError(f"the {label} id {value!r} is not an integer")
    if weight_at is None:
        return user, item, 1.0
    try:
        weight = float(fields[weight_at])
    except ValueError:
        raise ValueError(f"the weight {fields[weight_at]!r} is not a number") from None
    if not math.isfinite(weight):
        raise ValueError(f"the weight {fields[weight_at]!r} is not a finite number")
    return user, item, weight


def _ids_from_strings(values: list[str], int_ids: bool) -> np.ndarray:
    """Turn id strings into int64 when every one is an integer, else into a str array."""
    if int_ids or all(_INTEGER.fullmatch(v) for v in values):
        return np.asarray([int(v) for v in values], dtype=np.int64)
    return np.asarray(values, dtype=str)


# --------------------------------------------------------------------------------------------
# Generic tables: columns found by name.
# --------------------------------------------------------------------------------------------

USER_NAMES = ("user", "user_id", "userid", "uid", "users")
ITEM_NAMES = ("item", "item_id", "itemid", "iid", "movieid", "movie_id", "artistid", "artist_id")
_WEIGHT_NAMES = ("weight", "rating", "count", "plays", "playcount", "value", "score")


def pick_column(columns: Sequence[str], given: str | None, candidates, what: str, where) -> str:
    """Return ``given`` when present, else the first column named like a ``what`` column."""
    if given is not None:
        if given not in columns:
            raise UnknownColumnError(
                f"{where} has no column {given!r}; its columns are {', '.join(map(str, columns))}."
            )
        return given
    by_folded = {str(c).casefold(): c for c in columns}
    for candidate in candidates:
        if candidate in by_folded:
            return by_folded[candidate]
    raise UnknownColumnError(
        f"{where} has no {what} column (tried {', '.join(candidates)}); its columns are "
        f"{', '.join(map(str, columns))}; name it with {what}_col=."
    )


def find_weight(columns, given, where) -> str | None:
    try:
        return pick_column(columns, given, _WEIGHT_NAMES, "weight", where)
    except UnknownColumnError:
        if given is not None:
            raise
        return None


def parse_table(
    text: str,
    path: Path,
    user_col: str | None,
    item_col: str | None,
    weight_col: str | None,
    sep: str | None,
    on_bad_lines: str,
) -> tuple[Records, str | None]:
    """Parse a delimited text whose first line is a header; return records and weight column.

    ``sep`` defaults to a tab for ``.tsv`` files, else a comma. The weight column is None when
    the table has none (every row then weighs 1).
    """
    if sep is None:
        sep = "\t" if ".tsv" in path.suffixes else ","
    header = _header(text, sep, True)
    user = pick_column(header, user_col, USER_NAMES, "user", path)
    item = pick_column(header, item_col, ITEM_NAMES, "item", path)
    weight = find_weight(header, weight_col, path)
    spec = _TableSpec(sep=sep, header=True, quoted=True, user=user, item=item, weight=weight)
    return _parse_text(text, spec, path, on_bad_lines), weight


def read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise ImportError(
            f"Reading {path} needs pyarrow: pip install pyarrow (or 'als-recommender[parquet]')."
        ) from exc


# --------------------------------------------------------------------------------------------
# Data set layouts: ratings, titles (movies.dat, u.item, artists.dat, movies.csv) and users.
# --------------------------------------------------------------------------------------------


def read_layout(
    folder_or_file: Path, layout: Layout, on_bad_lines: str
) -> tuple[Records, Path, dict | None]:
    """Read a data set laid out as ``layout``: its ratings file and, when present, titles.

    Returns the records, the ratings file read and ``{raw item id: title}`` (or None).
    """
    if folder_or_file.is_dir():
        ratings = ratings_file(folder_or_file, layout)
        if ratings is None:
            raise FileNotFoundError(
                2, f"No {' or '.join(layout.ratings)} in the data folder", str(folder_or_file)
            )
    else:
        ratings = folder_or_file
    text = read_text(ratings, layout.encoding)
    if layout.header:
        user, item, weight = layout.columns
    else:
        user, item, weight = 0, 1, 2
    spec = _TableSpec(
        sep=layout.sep, header=layout.header, quoted=layout.sep == ",", user=user, item=item,
        weight=weight, fields=None if layout.header else layout.fields, int_ids=True,
    )  # fmt: skip
    records = _parse_text(text, spec, ratings, on_bad_lines)
    titles_path = ratings.parent / layout.items if layout.items else None
    titles = None
    if titles_path is not None and titles_path.is_file():
        titles = _read_layout_titles(titles_path, layout, on_bad_lines)
    return records, ratings, titles


def _read_layout_titles(path: Path, layout: Layout, on_bad_lines: str) -> dict:
    """Return {raw item id: title} from a layout's item file."""
    text = read_text(path, layout.items_encoding)
    id_column, title_column = layout.items_columns
    if layout.sep == "," and layout.items_header:
        frame = pd.read_csv(io.StringIO(text), usecols=[id_column, title_column], dtype=str)
        frame = frame.dropna()
        return dict(
            zip(_ids_from_strings(list(frame[id_column]), True), frame[title_column], strict=True)
        )
    titles = {}
    for number, line in _lines(text):
        if (number == 1 and layout.items_header) or not line.strip():
            continue
        fields = line.split(layout.items_sep)
        if len(fields) < 2 or not SPACED_INTEGER.fullmatch(fields[0]):
            if on_bad_lines == "error":
                raise DataFormatError(
                    f"{path}, line {number}: expected an integer id and a title separated by "
                    f"{layout.items_sep!r}: {line[:200]!r}.",
                    path=str(path),
                    line_number=number,
                    line=line,
                )
            continue
        titles[int(fields[0])] = _title_of(fields, layout.items_fields, layout.items_sep)
    return titles


def read_users(path: Path) -> pd.DataFrame:
    """Read ml-1m ``users.dat`` or ml-100k ``u.user``, given the file or its folder."""
    if path.is_dir():
        path = next((path / n for n in ("users.dat", "u.user") if (path / n).is_file()), path)
    if path.name.startswith("u.user"):
        sep, columns = "|", ["user", "age", "gender", "occupation", "zip"]
    else:
        sep, columns = "::", ["user", "gender", "age", "occupation", "zip"]
    rows = [line.split(sep) for _, line in _lines(read_text(path, "iso-8859-1")) if line]
    frame = pd.DataFrame(rows, columns=columns)
    for column in ("user", "age"):
        frame[column] = frame[column].astype(np.int64)
    return frame


# --------------------------------------------------------------------------------------------
# Item titles given apart from the data (the CLI's --titles).
# --------------------------------------------------------------------------------------------


def read_titles_table(path: str | os.PathLike) -> dict:
    """Read an ``item id, title`` table: the first two columns of a delimited file with a header.

    The separator is the commonest of tab, comma, semicolon and ``|`` on the header line;
    fields may be quoted, and a row with more fields than the header has the separator in its
    title, which keeps them. Ids are int when every one is an integer, else str; titles are
    str, ``""`` where missing. A UTF-8 byte-order mark is ignored.

    Parameters
    ----------
    path : str or path-like
        A CSV/TSV file (``.gz`` allowed) whose first line is a header.

    Returns
    -------
    dict
        ``{raw item id: title}``, e.g. for :func:`als.data.load`'s ``titles=``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The table has no rows.
    """
    path = check_file(Path(path))
    lines = [line for _, line in _lines(read_text(path, "utf-8")) if line.strip()]
    if len(lines) < 2:
        raise EmptyDataError(f"The titles table {path} has no rows.")
    sep = max(("\t", ",", ";", "|"), key=lines[0].count) if lines[0].strip() else ","
    sep = sep if sep in lines[0] else ","
    width = max(2, len(_split(lines[0], sep, True)))
    ids, titles = [], []
    for number, line in enumerate(lines[1:], start=2):
        try:
            fields = _split(line, sep, True)
        except ValueError as exc:
            raise DataFormatError(f"{path}, row {number}: {exc}.", path=str(path)) from None
        ids.append(fields[0].strip() if fields else "")
        titles.append(_title_of(fields, width, sep) if len(fields) > 1 else "")
    keys = [int(i) for i in ids] if all(_INTEGER.fullmatch(i) for i in ids) else ids
    return dict(zip(keys, titles, strict=True))
