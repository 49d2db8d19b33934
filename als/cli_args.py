"""The argparse pieces the command lines share: parser, help format, number types, options.

``python -m als.train``, ``als.recommend`` and ``als.tune`` build their parsers from these, so
a mistake reads the same in each (one line, :class:`~als.errors.UsageError`), every ``--help``
shows a default once and only where there is one, and a number option refuses what it cannot
take before any work starts.
"""

from __future__ import annotations

import argparse
import math

from als.backends.base import BACKENDS

from .errors import UsageError

__all__ = [
    "BACKEND_CHOICES",
    "HelpFormatter",
    "OneLineParser",
    "add_backend",
    "add_count",
    "add_repeatable",
    "has_default",
    "number",
]

#: what ``--backend`` takes: ``auto`` and every backend by name
BACKEND_CHOICES = ("auto", *sorted(BACKENDS))


def has_default(action):
    """Whether an option has a default worth showing: not None, a switch's False or []."""
    default = action.default
    return not (default is None or default is False or (isinstance(default, list) and not default))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows an option's default once, and only when it has one.

    ``ArgumentDefaultsHelpFormatter`` appends ``(default: None)`` to options that have no
    default value, ``(default: False)`` to switches and ``(default: [])`` to repeatable
    options; where "not given" means something, the option's help says what in words.
    """

    def _get_help_string(self, action):
        if has_default(action):
            return super()._get_help_string(action)
        return action.help


class OneLineParser(argparse.ArgumentParser):
    """An ``argparse`` parser that reports a mistake on one line, without the usage block.

    The mistake is raised as :class:`~als.errors.UsageError`, which
    :func:`als.cli_errors.user_errors` prints as one line with exit status 2, like every other
    failure. Help is formatted by :class:`HelpFormatter`.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

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


def add_backend(parser, help):
    """Add ``--backend``, where to compute (``auto``: CUDA when a GPU is usable, else CPU)."""
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help=help)
