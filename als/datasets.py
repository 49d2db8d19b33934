"""Finding data sets by name: the registry, the folders searched, and safe downloads.

:func:`find_dataset` looks for a named data set (``ml-1m``, ``ml-100k``, ``lastfm-2k``,
``ml-20m``, ...) in every folder of ``$ALS_DATA_DIR`` (``os.pathsep``-separated), the
project's ``data/`` folder (in a source checkout) and ``~/.cache/als``, and otherwise downloads
the official GroupLens zip into ``~/.cache/als``. A download is verified before anything is
unpacked: by its sha256 when one is known (``als/registry.json`` or ``$ALS_SHA256_<NAME>``,
e.g. ``ALS_SHA256_ML_1M``), else by the md5 that other projects pin (``md5_third_party`` in
the registry), in which case the zip's sha256 is logged so that it can be pinned; with
neither, nothing is downloaded.
:func:`extract_archive` then unpacks only the expected files, refusing unsafe member names,
and moves the folder into place in one rename.

The errors it raises (:class:`UnknownDatasetError`, :class:`DatasetNotFoundError`,
:class:`ChecksumError`, :class:`UnsafeArchiveError`) are in :mod:`als.errors`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from als.errors import (
    ChecksumError,
    DatasetNotFoundError,
    UnknownDatasetError,
    UnsafeArchiveError,
)
from als.readers import ratings_file
from als.registry import REGISTRY_PATH, Dataset, datasets, layouts

logger = logging.getLogger(__name__)

_SOURCE_ROOT = Path(__file__).resolve().parents[1]
#: the checkout's ``data/`` folder, searched when running from a source checkout (None when
#: installed: ``site-packages/data`` is not ours)
PROJECT_DATA_DIR = _SOURCE_ROOT / "data" if (_SOURCE_ROOT / "pyproject.toml").is_file() else None


# --------------------------------------------------------------------------------------------
# Data sets by name: the registry's entries (als.registry), looked up by name or alias.
# --------------------------------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Return the names :func:`find_dataset` and :func:`als.data.load` know.

    Returns
    -------
    list of str
        Canonical names, e.g. ``["lastfm-2k", "ml-100k", "ml-1m", ...]``.
    """
    return sorted(datasets())


def _by_name() -> dict[str, Dataset]:
    """Every data set under its canonical name and each of its aliases, lower case."""
    entries = datasets()
    return {
        key.lower(): dataset
        for dataset in entries.values()
        for key in (dataset.name, *dataset.aliases)
    }


def lookup_dataset(name: str) -> Dataset:
    """Look up a data set by name or alias (case-insensitive)."""
    dataset = _by_name().get(name.lower())
    if dataset is None:
        raise UnknownDatasetError(
            f"Unknown data set {name!r}: known names are {', '.join(dataset_names())}, "
            "or pass the path of a folder or file."
        )
    return dataset


def is_dataset_name(source: str) -> bool:
    """Whether ``source`` is a known data set name or alias (any case)."""
    return source.lower() in _by_name()


def _sha256_env_var(name: str) -> str:
    return "ALS_SHA256_" + re.sub(r"[^0-9A-Za-z]", "_", name).upper()


def dataset_name_of(folder: Path) -> str:
    """The registry name of a data set folder (e.g. ``ml-1m``), else the folder's own name."""
    for dataset in datasets().values():
        if folder.name in dataset.folders:
            return dataset.name
    return folder.name


# --------------------------------------------------------------------------------------------
# Finding, downloading and unpacking data sets.
# --------------------------------------------------------------------------------------------


def search_paths() -> list[Path]:
    """Return the folders searched for data sets, in order.

    Returns
    -------
    list of pathlib.Path
        Every entry of ``$ALS_DATA_DIR`` (split on ``os.pathsep``), the project's ``data/``
        folder (in a source checkout only), then ``~/.cache/als``.
    """
    env = os.environ.get("ALS_DATA_DIR", "")
    roots = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    project = [] if PROJECT_DATA_DIR is None else [PROJECT_DATA_DIR]
    return [*roots, *project, _cache_dir()]


def _cache_dir() -> Path:
    return Path.home() / ".cache" / "als"


def find_dataset(name: str, *, download: bool = True) -> Path:
    """Return the folder that holds data set ``name``, downloading it when allowed.

    Parameters
    ----------
    name : str
        A name from :func:`dataset_names` (``"ml-1m"``, ``"ml-100k"``, ``"lastfm-2k"``, ...).
    download : bool, default True
        When the data set is in no searched folder, download the official zip into
        ``~/.cache/als``. The zip is checked before it is unpacked: against its sha256 when
        one is known (``als/registry.json`` or ``$ALS_SHA256_<NAME>``, e.g.
        ``ALS_SHA256_ML_1M``), else against the md5 recorded in the registry
        (``md5_third_party``), in which case its sha256 is logged as a warning so it can be
        pinned. With neither, nothing is downloaded.

    Returns
    -------
    pathlib.Path
        The data set folder (e.g. ``.../ml-1m``), holding at least its ratings file.

    Raises
    ------
    UnknownDatasetError
        ``name`` is not a known data set.
    DatasetNotFoundError
        Not found locally and not downloaded; the message names every place searched.
    ChecksumError
        The downloaded zip does not match its sha256 (or, without one, its md5).
    UnsafeArchiveError
        The downloaded zip holds unsafe member names or lacks expected files.
    """
    dataset = lookup_dataset(name)
    layout = layouts()[dataset.layout]
    searched = [] if os.environ.get("ALS_DATA_DIR") else ["$ALS_DATA_DIR (not set)"]
    for root in search_paths():
        for folder_name in dataset.folders:
            folder = root / folder_name
            searched.append(str(folder))
            if ratings_file(folder, layout) is not None:
                return folder
    reason = _download_refusal(dataset, download)
    if reason is None:
        try:
            return _download(dataset, _cache_dir())
        except OSError as exc:  # no network, DNS failure, HTTP error, full disk
            reason = f"downloading {dataset.url} failed ({exc})"
    raise DatasetNotFoundError(
        f"Data set {dataset.name!r} not found: looked in {', '.join(searched)}; {reason}; "
        f"put the unzipped files ({' or '.join(layout.ratings)}, {layout.items}) in one of those "
        "folders, or set ALS_DATA_DIR to the folder that holds "
        f"{dataset.folders[0]}/.",
        searched=searched,
    )


def _expected_sha256(dataset: Dataset) -> str | None:
    return os.environ.get(_sha256_env_var(dataset.name)) or dataset.sha256


def _download_refusal(dataset: Dataset, download: bool) -> str | None:
    """Say why the data set will not be downloaded, or return None when it may be."""
    if not download:
        return "downloading was not allowed (download=False)"
    if _expected_sha256(dataset) is None and not dataset.md5:
        return (
            f"{dataset.url} was not downloaded because no sha256 or md5 is recorded for it "
            f"(set {_sha256_env_var(dataset.name)} to the zip's sha256 to allow the download)"
        )
    return None


def _fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (tests replace this function)."""
    logger.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out, length=1 << 20)


def _download(dataset: Dataset, cache: Path) -> Path:
    """Download, check and unpack ``dataset`` into ``cache``; return its folder."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        archive = Path(tmp) / f"{dataset.name}.zip"
        _fetch(dataset.url, archive)
        sha256 = _sha256_to_unpack(dataset, archive)
        target = cache / dataset.folders[0]
        layout = layouts()[dataset.layout]
        required = (layout.ratings[0], layout.items)
        extract_archive(
            archive,
            target,
            members=dataset.members,
            required=[r for r in required if r],
            sha256=sha256,
        )
    return target


def _sha256_to_unpack(dataset: Dataset, archive: Path) -> str | None:
    """Return the sha256 that :func:`extract_archive` must check ``archive`` against.

    That is the known sha256 when there is one. Otherwise, when the registry records an md5,
    the archive's md5 is checked here (raising :class:`ChecksumError` on a mismatch) and the
    archive's own sha256 is returned, after logging it so that the user can pin it. Without
    either, None, which :func:`extract_archive` refuses.
    """
    expected = _expected_sha256(dataset)
    if expected or not dataset.md5:
        return expected
    md5, sha256 = _digests(archive, "md5", "sha256")
    if md5 != dataset.md5.strip().lower():
        raise ChecksumError(
            f"Refusing to unpack {archive}: its md5 is {md5}, expected {dataset.md5.strip()}."
        )
    logger.warning(
        "%s: %s matched the md5 %s that other projects pin, but no sha256 is recorded for it; "
        "its sha256 is %s: pin it by setting %s=%s or 'sha256' in %s, so later downloads are "
        "checked by sha256.",
        dataset.name, dataset.url, md5, sha256, _sha256_env_var(dataset.name), sha256,
        REGISTRY_PATH,
    )  # fmt: skip
    return sha256


def _digests(path: Path, *algorithms: str) -> tuple[str, ...]:
    """Hex digests of the file at ``path``, one per hashlib algorithm, in one read."""
    hashes = [hashlib.new(algorithm) for algorithm in algorithms]
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            for digest in hashes:
                digest.update(block)
    return tuple(digest.hexdigest() for digest in hashes)


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Say why a zip member must not be unpacked, or return None when it is safe."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "has a '..' part"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def extract_archive(
    archive: str | os.PathLike,
    target: str | os.PathLike,
    *,
    members: Sequence[str],
    sha256: str | None,
    required: Sequence[str] = (),
) -> Path:
    """Check a zip's sha256 and unpack only the expected files into ``target``, atomically.

    Every member name is checked first; the archive is refused as a whole when any member has
    an absolute path, a ``..`` part or is a link. Then the members whose base name is in
    ``members`` and that sit at most one folder deep are written (flat) into a staging folder
    beside ``target``, which is renamed to ``target`` in one step.

    Parameters
    ----------
    archive : path-like
        The zip file.
    target : path-like
        The folder to create, e.g. ``~/.cache/als/ml-1m``. It must not exist, or be empty.
    members : sequence of str
        Base names of the files to unpack, e.g. ``("ratings.dat", "movies.dat")``.
    sha256 : str or None
        Expected hex digest of the zip. ``None`` refuses the archive: nothing unverified is
        unpacked.
    required : sequence of str, optional
        Base names that must be in the archive.

    Returns
    -------
    pathlib.Path
        ``target``.

    Raises
    ------
    ChecksumError
        ``sha256`` is None or does not match.
    UnsafeArchiveError
        A member name is unsafe, a file is listed twice, or a required file is missing.
    """
    archive, target = Path(archive), Path(target)
    if not sha256:
        raise ChecksumError(f"Refusing to unpack {archive}: no sha256 to check it against.")
    (actual,) = _digests(archive, "sha256")
    if actual != sha256.strip().lower():
        raise ChecksumError(
            f"Refusing to unpack {archive}: its sha256 is {actual}, expected {sha256.strip()}."
        )
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(
            f"{target} exists and is not empty; remove it to unpack {archive} there."
        )
    with zipfile.ZipFile(archive) as zf:
        chosen = _choose_members(zf, archive, set(members))
        missing = sorted(set(required) - set(chosen))
        if missing:
            raise UnsafeArchiveError(f"{archive} lacks the expected files {', '.join(missing)}.")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
        try:
            for base_name, info in chosen.items():
                with zf.open(info) as source, open(staging / base_name, "wb") as out:
                    shutil.copyfileobj(source, out, length=1 << 20)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _choose_members(zf: zipfile.ZipFile, archive: Path, wanted: set[str]) -> dict:
    """Map each wanted base name to its zip member, refusing unsafe or repeated members."""
    chosen = {}
    for info in zf.infolist():
        reason = _unsafe_reason(info)
        if reason is not None:
            raise UnsafeArchiveError(
                f"Refusing to unpack {archive}: member {info.filename!r} {reason}."
            )
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or not parts or len(parts) > 2 or parts[-1] not in wanted:
            continue
        if parts[-1] in chosen:
            raise UnsafeArchiveError(
                f"Refusing to unpack {archive}: {parts[-1]!r} appears more than once."
            )
        chosen[parts[-1]] = info
    return chosen
