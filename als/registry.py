"""The data-set registry: every fact about a named data set and its files, from one file.

``als/registry.json`` is the only place these facts are kept. It is package data of ``als``
(installed with it, read with :mod:`importlib.resources`), so an installed copy finds and checks
data sets exactly as a source checkout does. Its ``datasets`` section says where
each data set lives (folders, official URL, checksums, archive members, aliases) and its
``layouts`` section how a family of data sets is laid out on disk (ratings file names,
separator, encoding, header, columns, titles file). This module reads it and builds the
objects the rest of the data layer uses: :class:`Dataset` for :mod:`als.datasets` (finding and
downloading) and :class:`Layout` for :mod:`als.readers` (parsing). Nothing else reads the file.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REGISTRY_PATH", "Dataset", "Layout", "datasets", "layouts", "read_registry"]

#: the registry file, package data of ``als``
REGISTRY_PATH = importlib.resources.files("als").joinpath("registry.json")


@dataclass(frozen=True)
class Layout:
    """How one family of data sets is laid out on disk.

    ``columns`` names the user, item and weight columns: header names when ``header`` is true,
    otherwise positions are fixed and ``fields`` gives how many fields a line may have.
    """

    name: str
    ratings: tuple[str, ...]
    sep: str
    encoding: str
    header: bool
    columns: tuple[str, str, str]
    fields: tuple[int, ...]
    items: str | None
    items_sep: str
    items_encoding: str
    items_header: bool
    items_columns: tuple[str, str]
    unit: str


@dataclass(frozen=True)
class Dataset:
    """One named data set: where it lives locally, where its official zip is, how to check it."""

    name: str
    layout: str
    folders: tuple[str, ...]
    url: str
    members: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    sha256: str | None = None
    md5: str | None = None


def read_registry(path: Path | str | None = None) -> dict:
    """Return the parsed registry (``REGISTRY_PATH`` unless ``path`` is given)."""
    path = REGISTRY_PATH if path is None else Path(path)
    if not isinstance(path, Path):  # a resource inside a zip: no mtime, read it each time
        return json.loads(path.read_text(encoding="utf-8"))
    return _parse(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _parse(path: Path, modified: int) -> dict:
    """The parsed file, read again whenever it changes (``modified`` is its mtime)."""
    return json.loads(path.read_text(encoding="utf-8"))


def datasets(path: Path | None = None) -> dict[str, Dataset]:
    """Every data set of the registry by canonical name."""
    return {
        name: Dataset(
            name=name,
            layout=entry["layout"],
            folders=tuple(entry["folders"]),
            url=entry["url"],
            members=tuple(entry["members"]),
            aliases=tuple(entry.get("aliases", ())),
            sha256=entry.get("sha256"),
            md5=entry.get("md5_third_party"),
        )
        for name, entry in read_registry(path)["datasets"].items()
    }


def layouts(path: Path | None = None) -> dict[str, Layout]:
    """Every file layout of the registry by name."""
    return {
        name: Layout(
            name=name,
            ratings=tuple(entry["ratings"]),
            sep=entry["separator"],
            encoding=entry["encoding"],
            header=entry["header"],
            columns=tuple(entry["columns"]),
            fields=tuple(entry["fields"]),
            items=entry["titles"],
            items_sep=entry["titles_separator"],
            items_encoding=entry["titles_encoding"],
            items_header=entry["titles_header"],
            items_columns=tuple(entry["titles_columns"]),
            unit=entry["unit"],
        )
        for name, entry in read_registry(path)["layouts"].items()
    }
