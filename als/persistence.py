"""Model files: ``.npz`` archives written atomically and read without trusting their contents.

Writing goes to a temporary file in the target folder, is flushed and fsync'ed, then renamed
over the final name: a crash at any point leaves either the old file or the new one, never a
partial file under the final name (a stray ``.als-*.npz.tmp`` may remain after a hard kill).

Reading never unpickles, and checks every member's header (dtype, shape, and that the bytes
it claims are the bytes stored) before any array is allocated, so a truncated, corrupted or
hostile file is refused with ``ModelFileError`` instead of exhausting memory.
"""

from __future__ import annotations

import os
import tempfile
import zipfile

import numpy as np

from .errors import UserError

__all__ = ["ModelFileError", "write_npz", "read_npz"]


class ModelFileError(UserError, ValueError):
    """A file that is not a readable model file: truncated, corrupted, foreign or too new."""


def write_npz(fileobj_or_path, arrays):
    """Write ``arrays`` with ``np.savez``; atomically when given a path.

    A path without the ``.npz`` suffix gets it, as with ``np.savez``. Returns the path written
    (or None for a file object).
    """
    if not isinstance(fileobj_or_path, (str, os.PathLike)):
        np.savez(fileobj_or_path, **arrays)
        return None
    path = os.fspath(fileobj_or_path)
    if not path.endswith(".npz"):
        path += ".npz"
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".als-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def read_npz(fileobj_or_path):
    """Return the arrays of an ``.npz`` file as a dict, after checking every member's header.

    Raises
    ------
    FileNotFoundError
        When the path does not exist (also tried with ``.npz`` appended).
    ModelFileError
        For anything that is not a plain, intact ``np.savez`` archive of non-object arrays.
    """
    name = fileobj_or_path
    if isinstance(fileobj_or_path, (str, os.PathLike)):
        path = os.fspath(fileobj_or_path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path += ".npz"
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model file at {path}")
        fileobj_or_path = name = path
    try:
        with zipfile.ZipFile(fileobj_or_path) as archive:
            for info in archive.infolist():
                _check_member(archive, info, name)
            if hasattr(fileobj_or_path, "seek"):
                fileobj_or_path.seek(0)
        with np.load(fileobj_or_path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{name} is not a readable model file: {exc}") from exc


def _check_member(archive, info, name):
    """Refuse a member that is not a .npy array whose header matches its stored size."""
    if not info.filename.endswith(".npy"):
        raise ModelFileError(f"{name} is not a model file: it holds {info.filename!r}")
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        except ValueError as exc:
            raise ModelFileError(
                f"{name} is not a readable model file: {info.filename} is not an array ({exc})"
            ) from exc
        header_size = member.tell()
    array = info.filename[:-4]
    if dtype.hasobject:
        raise ModelFileError(
            f"{name} holds Python objects in {array!r}; model files never contain pickles"
        )
    claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    stored = info.file_size - header_size
    if claimed != stored:
        raise ModelFileError(
            f"{name} is truncated or corrupted: {array!r} claims {claimed:,} bytes of "
            f"{dtype} {shape} but holds {stored:,}"
        )
