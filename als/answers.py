"""Questions a person asks a trained model, answered with titles: used by both CLIs.

``als.train`` (train, then answer) and ``als.recommend`` (answer from a saved model) share
these helpers, so the two commands print and serialise the same things the same way. Each
function returns plain dicts (ready for ``--json``); ``format_*`` turns them into text.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import sys
import traceback
import warnings

import numpy as np

from als.backends.base import BackendUnavailable

from .errors import UsageError, UserError

__all__ = [
    "predict_for_user",
    "recommend_for_row",
    "similar_to",
    "explain_for_row",
    "format_predictions",
    "format_ranking",
    "format_explanation",
    "user_errors",
    "OneLineParser",
    "number",
    "add_count",
    "add_repeatable",
]


def _item(data, column, score):
    return {
        "item": _plain(data.item_id(int(column))),
        "title": data.item_title(int(column)),
        "score": float(score),
    }


def _plain(value):
    """A NumPy scalar as the Python value JSON understands."""
    return value.item() if isinstance(value, np.generic) else value


def recommend_for_row(model, data, row, N=20, userid=None):
    """Top ``N`` items for a user, never one they already have in ``row``.

    Parameters
    ----------
    model : AlternatingLeastSquares
    data : Interactions
        Gives ids and titles to item columns.
    row : csr_matrix, shape (1, n_items)
        The user's interactions.
    N : int
    userid : int, optional
        The user's row in the model; None computes their factors from ``row`` instead.
    """
    recalculate = userid is None
    ids, scores = model.recommend(
        0 if recalculate else userid, row, N=N, recalculate_user=recalculate
    )
    return [_item(data, i, s) for i, s in zip(ids, scores, strict=True)]


def predict_for_user(model, data, userid, column):
    """A user's predicted preference for item ``column``: their factors dot the item's."""
    user, item = model.user_factors[userid], model.item_factors[column]
    return _item(data, column, np.dot(user.astype(np.float64), item.astype(np.float64)))


def similar_to(model, data, column, N=10):
    """The ``N`` items most similar to item ``column`` (the item itself excluded)."""
    ids, scores = model.similar_items(column, N=N + 1)
    return [_item(data, i, s) for i, s in zip(ids, scores, strict=True) if i != column][:N]


def explain_for_row(model, data, row, column, N=10):
    """Why a user with interactions ``row`` would score item ``column`` as they do."""
    total, contributions, _ = model.explain(0, row, column, N=N)
    return {
        **_item(data, column, total),
        "because_of": [_item(data, i, s) for i, s in contributions],
    }


def format_ranking(heading, ranking):
    """A numbered list of items with scores, under a heading."""
    lines = [heading]
    for rank, entry in enumerate(ranking, start=1):
        lines.append(f"  {rank:>3}. {entry['score']:8.4f}  {entry['title']}")
    if not ranking:
        lines.append("  (nothing to show)")
    return "\n".join(lines)


def format_predictions(heading, predictions):
    """One line per item: the predicted preference, then the title."""
    lines = [heading]
    for entry in predictions:
        lines.append(f"  {entry['score']:8.4f}  {entry['title']}")
    return "\n".join(lines)


def format_explanation(heading, explanation):
    """The total score and the liked items that contribute most to it."""
    lines = [heading, f"  predicted score {explanation['score']:.4f}, mostly because of:"]
    for entry in explanation["because_of"]:
        lines.append(f"    {entry['score']:+8.4f}  {entry['title']}")
    return "\n".join(lines)


#: what a user can cause or meet, printed as their message alone: their mistakes (UserError:
#: bad data, options, arguments, a failed fit or query), a backend that cannot run here, a
#: file or folder that cannot be read or written (OSError: missing, unreadable, a folder,
#: BadGzipFile, ENOSPC ...; EOFError: a truncated file), a malformed CSV, a missing optional
#: package (ImportError: its message names the install command), memory. Anything else is a
#: bug: one line with its type, and the traceback with --debug or ALS_DEBUG=1.
USER_ERRORS = (
    UserError,
    BackendUnavailable,
    OSError,
    EOFError,
    ImportError,
    MemoryError,
    csv.Error,
)


def _one_line(exc):
    """The message of ``exc`` on one line (KeyError's quotes and OSError's errno dropped)."""
    if isinstance(exc, KeyError) and not isinstance(exc, UserError) and exc.args:
        text = str(exc.args[0])
    elif isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        text = f"{where}: {exc.strerror}" if where else exc.strerror
    elif isinstance(exc, MemoryError):
        text = f"out of memory {exc}".strip()
    else:
        text = str(exc)
    if not isinstance(exc, USER_ERRORS):
        # not a failure we know: name it, and keep its first line (Numba's run to pages)
        first = next((line for line in text.splitlines() if line.strip()), "")
        text = f"{type(exc).__name__}: {first.strip()} (run with --debug for the traceback)"
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(
        exc
    ).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line on stderr, like the errors (no source line under it)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def user_errors(main):
    """Run a CLI ``main``; any failure prints one line on stderr and exits with 2.

    Set ``ALS_DEBUG=1`` (or pass ``--debug``) to see the traceback as well.
    """

    @functools.wraps(main)
    def wrapper(argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return main(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 (a command line never shows a traceback)
            if "--debug" in argv or os.environ.get("ALS_DEBUG"):
                traceback.print_exc()
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2

    return wrapper


class OneLineParser(argparse.ArgumentParser):
    """An ``argparse`` parser that reports a mistake on one line, without the usage block.

    The mistake is raised as :class:`~als.errors.UsageError`, which ``user_errors`` prints as
    one line with exit status 2, like every other failure.
    """

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def number(kind, minimum=None, maximum=None, *, above=None, below=None):
    """An ``argparse`` ``type`` that parses ``kind`` and refuses values out of range.

    Parameters
    ----------
    kind : type
        ``int`` or ``float``; floats must also be finite.
    minimum, maximum : number, optional
        Inclusive bounds.
    above, below : number, optional
        Exclusive bounds.
    """

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        for bound, fails, word in (
            (minimum, lambda b: value < b, ">="),
            (maximum, lambda b: value > b, "<="),
            (above, lambda b: value <= b, ">"),
            (below, lambda b: value >= b, "<"),
        ):
            if bound is not None and fails(bound):
                raise argparse.ArgumentTypeError(f"must be {word} {bound:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_repeatable(parser, flag, help, metavar="TITLE"):
    """Add an option that may be given several times; its values collect in a list ([])."""
    parser.add_argument(flag, action="append", default=[], metavar=metavar, help=help)


def add_count(parser, help):
    """Add ``-N``/``--count``, how many answers to print (an integer >= 1, default 20)."""
    parser.add_argument("-N", "--count", type=number(int, 1), default=20, dest="count", help=help)
