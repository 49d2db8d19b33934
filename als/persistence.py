"""Model files: ``.npz`` archives written atomically and read without trusting their contents.

Writing goes to a temporary file in the target folder, is flushed and fsync'ed, then renamed
over the final name: a crash at any point leaves either the old file or the new one, never a
partial file under the final name. The new file gets ordinary permissions (the umask's for a
new file, the old file's mode when it replaces one), a symlink is written through to its
target, and temporary files left by saves that were killed (their process is gone) are
removed by the next save into that folder.

Reading opens regular files only (never a device, FIFO or directory, symlinks followed), never
unpickles, and checks every member's header (dtype, shape, and that the bytes it claims are
bytes the archive can hold) before any array is allocated, so a truncated, corrupted or
hostile file is refused with ``ModelFileError`` instead of exhausting memory or hanging.
"""

from __future__ import annotations

import errno
import hashlib
import os
import platform
import re
import secrets
import stat
import time
import zipfile

import numpy as np

from .errors import ModelFileError

__all__ = ["ModelFileError", "write_npz", "read_npz", "check_save_path"]

#: this machine, in the names of temporary files: a process id means something only here
_HOST = hashlib.sha1(platform.node().encode()).hexdigest()[:8]

#: temporary files of a save in progress, ``.als-<host>-<pid>-<random>.npz.tmp``, beside the
#: target; older versions named them ``.als-<random>.npz.tmp``
_TEMPORARY = re.compile(r"\.als-(?:([0-9a-f]{8})-(\d+)-)?[0-9A-Za-z_]+\.npz\.tmp")

#: a temporary file untouched this long is stale whoever wrote it (saves write continuously)
_STALE_SECONDS = 24 * 3600

#: deflate never expands data by more than this factor (RFC 1951: 258 bytes from 2 bits)
_MAX_DEFLATE_RATIO = 1032


def check_save_path(path):
    """Return the path ``write_npz`` would write for ``path``, or raise if it cannot be written.

    Run before expensive work (training) so a bad ``--save`` fails at once. The ``.npz``
    suffix is added as ``np.savez`` does; a symlink is followed to its target.

    Raises
    ------
    IsADirectoryError, NotADirectoryError, FileNotFoundError, PermissionError
        The target is a directory, its folder does not exist or is not a folder, or it is
        not writable.
    ModelFileError
        The target exists but is not a regular file (a device, a FIFO).
    """
    path = os.fspath(path)
    if os.path.basename(path) in ("", ".", ".."):  # "models/": a folder, not a file name
        raise IsADirectoryError(errno.EISDIR, "give a file name to save the model to", path)
    if not path.endswith(".npz"):
        path += ".npz"
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, "cannot save a model over a directory", path)
    if os.path.exists(target) and not stat.S_ISREG(os.stat(target).st_mode):
        raise ModelFileError(f"cannot save a model to {path}: it is not a regular file")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        kind = NotADirectoryError if os.path.exists(folder) else FileNotFoundError
        raise kind(errno.ENOTDIR, "the folder to save the model in does not exist", folder)
    if not os.access(folder, os.W_OK | os.X_OK) or (
        os.path.exists(target) and not os.access(target, os.W_OK)
    ):
        raise PermissionError(errno.EACCES, "no permission to save a model here", path)
    return target


def write_npz(fileobj_or_path, arrays):
    """Write ``arrays`` with ``np.savez``; atomically when given a path.

    A path without the ``.npz`` suffix gets it, as with ``np.savez``. Returns the path written
    (or None for a file object).
    """
    if not isinstance(fileobj_or_path, (str, os.PathLike)):
        np.savez(fileobj_or_path, **arrays)
        return None
    path = check_save_path(fileobj_or_path)
    directory = os.path.dirname(path)
    _remove_stale_temporaries(directory)
    name = f".als-{_HOST}-{os.getpid()}-{secrets.token_hex(6)}.npz.tmp"
    temporary = os.path.join(directory, name)
    # 0o666 through the umask, as open() creates files; an existing file's mode is kept
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        if os.path.exists(path):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
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


def _remove_stale_temporaries(directory):
    """Delete this module's temporary files whose saving process no longer runs.

    A file written on this machine is stale once the process named in it is gone (a killed
    save); any file (another machine's on a shared folder, an older version's) once it has
    not changed for a day. Files of saves still running are left alone.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None:
            continue
        full = os.path.join(directory, name)
        host, pid = match.groups()
        try:
            stale = now - os.lstat(full).st_mtime > _STALE_SECONDS
            if host == _HOST and not stale:
                stale = not _process_exists(int(pid))
            if stale:
                os.unlink(full)
        except OSError:
            continue  # another save removed it first, or it is not ours to remove


def _process_exists(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def read_npz(fileobj_or_path):
    """Return the arrays of an ``.npz`` file as a dict, after checking every member's header.

    Raises
    ------
    FileNotFoundError
        When the path does not exist (also tried with ``.npz`` appended).
    ModelFileError
        For anything that is not a regular file holding a plain, intact ``np.savez`` archive
        of non-object arrays.
    """
    if not isinstance(fileobj_or_path, (str, os.PathLike)):
        return _read_archive(fileobj_or_path, fileobj_or_path)
    path = os.fspath(fileobj_or_path)
    if not os.path.lexists(path) and os.path.lexists(path + ".npz"):
        path += ".npz"
    with _open_regular(path) as file:
        return _read_archive(file, path)


def _open_regular(path):
    """Open ``path`` for reading, refusing anything but a regular file (symlinks followed).

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; the type is checked on the open
    descriptor, so the file checked is the file read.
    """
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no model file", path) from None
    except OSError as exc:
        raise ModelFileError(f"{path} cannot be opened: {exc.strerror}") from exc
    mode = os.fstat(handle).st_mode
    if not stat.S_ISREG(mode):
        os.close(handle)
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ModelFileError(f"{path} is {kind}, not a model file")
    os.set_blocking(handle, True)
    return os.fdopen(handle, "rb")


def _read_archive(file, name):
    try:
        size = _size_of(file)
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                _check_member(archive, info, name, size)
        if hasattr(file, "seek"):
            file.seek(0)
        with np.load(file, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{name} is not a readable model file: {exc}") from exc


def _size_of(file):
    """The file's size in bytes, or None when it cannot be told without reading it."""
    try:
        return os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        pass
    try:
        position = file.seek(0, os.SEEK_END)
        file.seek(0)
        return position
    except (AttributeError, OSError, ValueError):
        return None


def _check_member(archive, info, name, size):
    """Refuse a member that is not a .npy array whose header matches what it can hold.

    The sizes in the zip directory are the archive's own claims: a member stored without
    compression holds exactly its compressed bytes, a deflated one at most 1032 times them,
    and no member holds more compressed bytes than the file has.
    """
    if not info.filename.endswith(".npy"):
        raise ModelFileError(f"{name} is not a model file: it holds {info.filename!r}")
    if size is not None and info.compress_size > size:
        raise ModelFileError(
            f"{name} is truncated or corrupted: {info.filename} claims {info.compress_size:,} "
            f"bytes but the file has {size:,}"
        )
    if info.compress_type == zipfile.ZIP_STORED:
        capacity = info.compress_size
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        capacity = info.compress_size * _MAX_DEFLATE_RATIO
    else:
        raise ModelFileError(
            f"{name} is not a model file: {info.filename} uses compression method "
            f"{info.compress_type} (np.savez stores, np.savez_compressed deflates)"
        )
    if info.file_size > capacity:
        raise ModelFileError(
            f"{name} is corrupted: {info.filename} claims {info.file_size:,} bytes but its "
            f"{info.compress_size:,} stored bytes can hold at most {capacity:,}"
        )
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
