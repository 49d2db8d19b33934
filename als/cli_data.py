"""Data from the command line: the data options, the table's columns checked first, the load.

``python -m als.train`` and ``python -m als.tune`` take the same data options
(:func:`add_data_arguments`) and load the same way (:func:`load_interactions`). For a generic
table (a CSV, TSV or Parquet file that is no known data set's ratings file) the columns are
picked from its header alone (:func:`table_columns`), before the table is read in full, by the
rules :func:`als.data.load` applies: a column the flags name must be there, and one they do
not name is found by name, the weight column included. The report says which were used.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import zlib
from pathlib import Path

from .cli_args import number
from .cluster_data import PARQUET_SUFFIXES
from .data import load
from .errors import InvalidValueError, UnknownColumnError
from .evaluation import train_test_split
from .readers import (
    ITEM_NAMES,
    USER_NAMES,
    find_weight,
    layout_of_file,
    pick_column,
    read_titles_table,
)

__all__ = [
    "Columns",
    "add_data_arguments",
    "add_split_arguments",
    "describe_data",
    "load_interactions",
    "split",
    "table_columns",
]

#: the table options of the data group (besides the columns)
TABLE_OPTIONS = ("sep", "encoding", "titles")


def add_data_arguments(parser, data_help):
    """Add the data options (``--data``, ``--user-col`` ...); ``data_help`` describes ``--data``,
    whose meaning when left out differs between the commands."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", help=data_help)
    data.add_argument(
        "--user-col",
        help="user column of a generic table; without it, the first column named user, "
        "user_id, userid, uid or users (any case)",
    )
    data.add_argument(
        "--item-col",
        help="item column of a generic table; without it, the first column named item, "
        "item_id, itemid, iid, movieid, movie_id, artistid or artist_id (any case)",
    )
    data.add_argument(
        "--weight-col",
        help="weight column of a generic table; without it, the first column named weight, "
        "rating, count, plays, playcount, value or score (any case), and 1 per row when "
        "none is; the report says which columns were used",
    )
    data.add_argument(
        "--titles", metavar="PATH", help="a table of item id, title for a generic table"
    )
    data.add_argument(
        "--sep",
        help="field separator of a generic text table; without it, a tab for .tsv files "
        "and a comma for others",
    )
    data.add_argument("--encoding", help="text encoding of a generic text table; without it, UTF-8")
    data.add_argument(
        "--min-weight",
        type=number(float),
        help="drop interactions weighing less; without it, keep them all",
    )
    for side in ("user", "item"):
        data.add_argument(
            f"--min-{side}-interactions",
            type=number(int, 1),
            default=1,
            help=f"drop {side}s with fewer interactions (repeated to a fixed point)",
        )
    data.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed lines (and count them) instead of stopping at the first",
    )
    return data


@dataclasses.dataclass(frozen=True)
class Columns:
    """The columns of a generic table that a run reads, and which of them were guessed."""

    user: str
    item: str
    weight: str | None
    guessed: tuple = ()

    def describe(self):
        """One line for the report, e.g. ``columns: user 'u', item 'i', weight 'count'
        (guessed; --weight-col names another)``."""

        def told(role, name):
            if role not in self.guessed:
                return f"{role} {name!r}"
            return f"{role} {name!r} (guessed; --{role}-col names another)"

        weight = (
            told("weight", self.weight)
            if self.weight is not None
            else "no weight column (every row weighs 1)"
        )
        return f"columns: {told('user', self.user)}, {told('item', self.item)}, {weight}"

    def as_dict(self):
        """The columns for the JSON summary."""
        return {**dataclasses.asdict(self), "guessed": list(self.guessed)}


def table_columns(args, folders=False):
    """The columns ``load`` will read from ``--data``, from the table's header alone.

    Returns None when ``--data`` is no generic table (a data set's name, folder or ratings
    file, whose layout fixes the columns) or when its header cannot be read here (``load``
    then reports why). ``folders``: a folder of Parquet files is a table too (the workers read
    it).

    Raises
    ------
    UnknownColumnError
        A column the flags name is not in the header, or no column is named like a user or
        an item column; the message names the flag.
    """
    path = _table_path(args, folders)
    names = None if path is None else _header(path, args.sep, args.encoding)
    if names is None:
        return None
    given = {"user": args.user_col, "item": args.item_col, "weight": args.weight_col}
    try:
        user = pick_column(names, args.user_col, USER_NAMES, "user", path)
        item = pick_column(names, args.item_col, ITEM_NAMES, "item", path)
        weight = find_weight(names, args.weight_col, path)
    except UnknownColumnError as exc:
        missing = next((f"--{r}-col" for r, v in given.items() if v and v not in names), None)
        raise UnknownColumnError(f"{missing}: {exc}" if missing else str(exc)) from None
    picked = {"user": user, "item": item, "weight": weight}
    guessed = tuple(r for r, v in given.items() if v is None and picked[r] is not None)
    return Columns(user, item, weight, guessed)


def _table_path(args, folders):
    """The file whose header gives a generic table's columns, or None (see table_columns)."""
    if args.data is None:
        return None
    path = Path(args.data)
    if folders and path.is_dir():
        parts = sorted(p for p in path.iterdir() if p.name.lower().endswith(PARQUET_SUFFIXES))
        return parts[0] if parts else None
    if not path.is_file():
        return None
    options = (args.user_col, args.item_col, args.weight_col)
    options += tuple(getattr(args, name) for name in TABLE_OPTIONS)
    if layout_of_file(path) is not None and all(option is None for option in options):
        return None  # a known data set's ratings file: its layout fixes the columns
    return path


def _header(path, sep, encoding):
    """The column names of a table: its Parquet schema or its first line; None if unreadable."""
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        try:
            import pyarrow.parquet
        except ImportError:
            return None  # load says which package to install
        try:
            return list(pyarrow.parquet.read_schema(path).names)
        except (OSError, ValueError):  # pyarrow's errors derive from these
            return None
    if sep is None:
        sep = "\t" if ".tsv" in path.suffixes else ","
    try:
        with open(path, "rb") as file:
            compressed = file.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as file:
            first = file.readline()
        text = first.decode(encoding or "utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, LookupError):
        return None
    try:
        return [name.strip() for name in next(csv.reader([text], delimiter=sep), [])]
    except (csv.Error, TypeError):  # a separator csv cannot take: the load reports it
        return None


def load_interactions(args, columns=None):
    """Load and filter the data named by the arguments (``columns``: from table_columns)."""
    options = {name: getattr(args, name) for name in ("sep", "encoding") if getattr(args, name)}
    if args.titles:
        options["titles"] = read_titles_table(args.titles)
    if columns is not None:
        options.update(user_col=columns.user, item_col=columns.item, weight_col=columns.weight)
    else:
        options.update(user_col=args.user_col, item_col=args.item_col, weight_col=args.weight_col)
    data = load(args.data, on_bad_lines="skip" if args.skip_bad_lines else "error", **options)
    if (
        args.min_weight is not None
        or args.min_user_interactions > 1
        or args.min_item_interactions > 1
    ):
        data = data.filter(
            min_weight=args.min_weight,
            min_user_interactions=args.min_user_interactions,
            min_item_interactions=args.min_item_interactions,
        )
    return data


def describe_data(data, columns=None):
    """``data.summary()``, with the columns read (``columns``, when known) as its first step."""
    lines = data.summary().split("\n")
    if columns is not None:
        lines.insert(1, f"  - {columns.describe()}")
    return "\n".join(lines)


def add_split_arguments(group, test_help):
    """Add ``--test-fraction`` (``test_help`` says what for) and ``--k``, the held-out split
    :func:`split` makes and the cutoff of the metrics scored on it."""
    group.add_argument(
        "--test-fraction", type=number(float, above=0, below=1), default=0.2, help=test_help
    )
    group.add_argument("--k", type=number(int, 1), default=10, help="cutoff of the ranking metrics")


def split(user_items, fraction, seed, keep_rows=()):
    """Hold out ``fraction`` of the interactions; rows in ``keep_rows`` stay in train."""
    if not 0 < fraction < 1:
        raise InvalidValueError(f"--test-fraction must be in (0, 1), got {fraction}")
    train, test = train_test_split(user_items, 1 - fraction, random_state=seed)
    if len(keep_rows):
        train, test = train.tolil(), test.tolil()
        for row in keep_rows:
            train[row] = user_items[row]
            test[row] = 0
        train, test = train.tocsr(), test.tocsr()
        test.eliminate_zeros()
    return train, test
