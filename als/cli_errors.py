"""How a command line fails: one line on stderr, in the command line's own terms.

:func:`user_errors` wraps each command's ``main``. A failure prints one ``error:`` line and
exits with status 2, never a traceback (``--debug`` or ``ALS_DEBUG=1`` shows it); a warning
is one ``warning:`` line; a reader that closes the pipe (``| head``) ends the command quietly.
The library's messages give Python advice (``user_col=``, ``load(..., backend='cpu')``);
:func:`flag_advice` rewrites it as the flags that do the same (``--user-col``,
``--backend cpu``).
"""

from __future__ import annotations

import csv
import functools
import os
import re
import sys
import traceback
import warnings

from als.backends.base import BackendUnavailable

from .errors import UserError

__all__ = ["USER_ERRORS", "SIGPIPE_STATUS", "flag_advice", "one_line", "user_errors"]

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

#: the exit status of a command whose reader went away: 128 + SIGPIPE, as a shell reports a
#: command that SIGPIPE ended (Python ignores the signal and raises BrokenPipeError instead)
SIGPIPE_STATUS = 141

#: the library's keyword arguments and the flags that set them
FLAGS = {
    "user_col": "--user-col",
    "item_col": "--item-col",
    "weight_col": "--weight-col",
    "sep": "--sep",
    "encoding": "--encoding",
    "titles": "--titles",
}

#: Python advice in the library's messages -> the same advice as flags
ADVICE = (
    (re.compile(r"\bname it with (user|item|weight)_col="), r"name it with --\1-col"),
    (re.compile(r"\bload\(\.\.\., backend='(\w+)'\)"), r"--backend \1"),
    (re.compile(r"\bencoding='([^']*)'"), r"--encoding \1"),
    (re.compile(r"\bdtype=(\w+)"), r"--dtype \1"),
)

#: ``load()``'s refusal of options that do not apply to a data set
NOT_APPLICABLE = re.compile(r"\bload\(\): ([\w, ]+?) does not apply to")


def flag_advice(text):
    """``text`` with the library's Python advice rewritten as command-line flags.

    Examples
    --------
    >>> flag_advice("its columns are a, b; name it with user_col=.")
    'its columns are a, b; name it with --user-col.'
    >>> flag_advice("load(): sep, user_col does not apply to ml-1m.")
    '--sep, --user-col do not apply to ml-1m.'
    """
    for pattern, replacement in ADVICE:
        text = pattern.sub(replacement, text)

    def as_flags(match):
        names = [name.strip() for name in match.group(1).split(",")]
        flags = ", ".join(FLAGS.get(name, name) for name in names)
        return f"{flags} {'does' if len(names) == 1 else 'do'} not apply to"

    return NOT_APPLICABLE.sub(as_flags, text)


def one_line(exc):
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
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return flag_advice(text) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line on stderr, like the errors (no source line under it)."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def _silence_stdout():
    """Point stdout at the null device, so that the interpreter's last flush of a closed pipe
    stays quiet (it would print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no file (a test's capture): nothing to flush
        pass


def user_errors(main):
    """Run a CLI ``main``; any failure prints one line on stderr and exits with 2.

    Set ``ALS_DEBUG=1`` (or pass ``--debug``) to see the traceback as well. A closed stdout
    (the reader of a pipe went away) ends the command without a message, with status
    :data:`SIGPIPE_STATUS`.
    """

    @functools.wraps(main)
    def wrapper(argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                status = main(argv)
            sys.stdout.flush()  # here, where a closed pipe can still be caught
            return status
        except BrokenPipeError:
            _silence_stdout()
            return SIGPIPE_STATUS
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as exc:  # noqa: BLE001 (a command line never shows a traceback)
            if "--debug" in argv or os.environ.get("ALS_DEBUG"):
                traceback.print_exc()
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2

    return wrapper
