"""Tests of als.datasets: the search order, search folders that cannot be read, offline errors,
downloads checked by sha256 or (when only that is recorded) md5, safe zip extraction, and the
registry file.

No test touches the network: ``_fetch`` is replaced by a copy of a zip the test builds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest

import als.datasets as datasets
import als.registry as registry
from als.data import (
    ChecksumError,
    DatasetNotFoundError,
    UnknownDatasetError,
    UnsafeArchiveError,
    extract_archive,
    find_dataset,
    load,
)
from tests.test_data import write


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Three empty search roots: $ALS_DATA_DIR, the project data/ folder and $HOME."""
    roots = {name: tmp_path / name for name in ("env", "project", "home")}
    for root in roots.values():
        root.mkdir()
    monkeypatch.setenv("ALS_DATA_DIR", str(roots["env"]))
    monkeypatch.setenv("HOME", str(roots["home"]))
    monkeypatch.setattr(datasets, "PROJECT_DATA_DIR", roots["project"])
    monkeypatch.delenv("ALS_SHA256_ML_100K", raising=False)

    def no_network(url, destination):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(datasets, "_fetch", no_network)
    return roots


def test_find_dataset_search_order(places):
    cache = places["home"] / ".cache" / "als"
    write(cache / "ml-100k" / "u.data", "1\t1\t1\n")
    assert find_dataset("ml-100k") == cache / "ml-100k"
    write(places["project"] / "ml-100k" / "u.data", "1\t1\t1\n")
    assert find_dataset("ml-100k") == places["project"] / "ml-100k"
    write(places["env"] / "ml-100k" / "u.data", "1\t1\t1\n")
    assert find_dataset("ML-100K") == places["env"] / "ml-100k"
    (places["env"] / "hetrec2011-lastfm-2k").mkdir()  # a folder without its ratings file
    write(places["home"] / ".cache" / "als" / "hetrec2011-lastfm-2k" / "user_artists.dat", "a")
    assert find_dataset("lastfm-2k").parent == cache
    assert load("ml-100k").name == "ml-100k"


def ml_100k(root):
    folder = root / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("1\t1\t5\t0\n")
    return folder


@pytest.fixture
def unreadable(tmp_path):
    """A search folder whose entries cannot be looked at, even by root: a too-long name."""
    return tmp_path / ("x" * 300)


def test_unreadable_search_folders_are_skipped_with_a_note(
    tmp_path, unreadable, monkeypatch, caplog
):
    good = ml_100k(tmp_path / "good")
    monkeypatch.setenv("ALS_DATA_DIR", os.pathsep.join([str(unreadable), str(good.parent)]))
    with caplog.at_level(logging.WARNING, logger="als.datasets"):
        assert find_dataset("ml-100k", download=False) == good
    assert any("skipping" in record.getMessage() for record in caplog.records)


def test_unreadable_search_folders_are_named_when_nothing_is_found(unreadable, monkeypatch):
    monkeypatch.setenv("ALS_DATA_DIR", str(unreadable))
    monkeypatch.setenv("HOME", str(unreadable))  # the user cache is unreadable too
    with pytest.raises(DatasetNotFoundError, match="unreadable") as caught:
        find_dataset("lastfm-2k", download=False)
    assert any("unreadable" in place and "x" * 300 in place for place in caught.value.searched)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_a_folder_without_permission_is_skipped(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    ml_100k(locked)
    locked.chmod(0)
    good = ml_100k(tmp_path / "good")
    monkeypatch.setenv("ALS_DATA_DIR", os.pathsep.join([str(locked), str(good.parent)]))
    try:
        assert find_dataset("ml-100k", download=False) == good
    finally:
        locked.chmod(0o755)


def use_registry(monkeypatch, tmp_path: Path, name: str, **fields) -> None:
    """Read the registry from a copy of als/registry.json with ``fields`` changed for ``name``."""
    document = json.loads(registry.REGISTRY_PATH.read_text(encoding="utf-8"))
    document["datasets"][name].update(fields)
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    monkeypatch.setattr(registry, "REGISTRY_PATH", path)


def test_offline_error_names_every_place(places, tmp_path, monkeypatch):
    # Neither a sha256 nor an md5 is known: nothing is downloaded.
    use_registry(monkeypatch, tmp_path, "ml-100k", sha256=None, md5_third_party=None)
    with pytest.raises(DatasetNotFoundError) as caught:
        find_dataset("ml-100k")
    message = str(caught.value)
    for root in (places["env"], places["project"], places["home"] / ".cache" / "als"):
        assert str(root / "ml-100k") in message
    assert "ALS_SHA256_ML_100K" in message and "u.data" in message and "\n" not in message
    assert caught.value.searched == [str(r / "ml-100k") for r in places.values()][:2] + [
        str(places["home"] / ".cache" / "als" / "ml-100k")
    ]
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        find_dataset("ml-100k", download=False)
    monkeypatch.delenv("ALS_DATA_DIR")
    with pytest.raises(FileNotFoundError, match=r"\$ALS_DATA_DIR \(not set\)"):
        load("ml-100k")
    with pytest.raises(UnknownDatasetError, match="known names are lastfm-2k, ml-100k"):
        load("ml-10m")


def make_zip(path: Path, members: dict) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_checks_sha256_and_unpacks_into_the_cache(places, tmp_path, monkeypatch):
    archive = tmp_path / "ml-100k.zip"
    digest = make_zip(
        archive,
        {"ml-100k/u.data": "1\t5\t3\n", "ml-100k/u.item": "5|Five (1995)|x\n", "ml-100k/u.x": "."},
    )
    monkeypatch.setattr(datasets, "_fetch", lambda url, dest: shutil.copyfile(archive, dest))
    monkeypatch.setenv("ALS_SHA256_ML_100K", "0" * 64)
    cache = places["home"] / ".cache" / "als"
    with pytest.raises(ChecksumError, match="expected 0000"):
        find_dataset("ml-100k")
    assert not (cache / "ml-100k").exists() and not list(cache.glob(".*"))
    monkeypatch.setenv("ALS_SHA256_ML_100K", digest)
    folder = find_dataset("ml-100k")
    assert folder == cache / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.item"]
    assert load("ml-100k").item_title(0) == "Five (1995)"
    assert not list(cache.glob(".*"))  # no staging or download leftovers


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs/u.data", "ok/../../evil.txt", "C:/x"])
def test_extract_refuses_unsafe_members(tmp_path, evil):
    archive = tmp_path / "a.zip"
    digest = make_zip(archive, {"ml-1m/ratings.dat": "1::1::1\n", evil: "gotcha"})
    target = tmp_path / "out" / "ml-1m"
    with pytest.raises(UnsafeArchiveError, match="Refusing to unpack"):
        extract_archive(archive, target, members=["ratings.dat", "evil.txt"], sha256=digest)
    assert not target.exists() and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_extract_refuses_without_or_with_wrong_checksum(tmp_path):
    archive = tmp_path / "a.zip"
    digest = make_zip(archive, {"ratings.dat": "1::1::1\n", "deep/er/ratings.dat": "x"})
    for sha in (None, "ab" * 32):
        with pytest.raises(ChecksumError, match="Refusing to unpack"):
            extract_archive(archive, tmp_path / "t", members=["ratings.dat"], sha256=sha)
    assert not (tmp_path / "t").exists()
    with pytest.raises(UnsafeArchiveError, match="lacks the expected files movies.dat"):
        extract_archive(
            archive, tmp_path / "t", members=["ratings.dat"], required=["movies.dat"], sha256=digest
        )
    out = extract_archive(archive, tmp_path / "t", members=["ratings.dat"], sha256=digest)
    assert (out / "ratings.dat").read_text() == "1::1::1\n"  # the flat member, not deep/er/


def test_registry_json_matches_the_code():
    document = json.loads(registry.REGISTRY_PATH.read_text(encoding="utf-8"))
    entries, layout_entries = document["datasets"], document["layouts"]
    assert sorted(entries) == datasets.dataset_names()
    for name, entry in entries.items():
        dataset, layout = datasets.lookup_dataset(name), registry.layouts()[entry["layout"]]
        assert entry["url"] == dataset.url and entry["url"].startswith(
            "https://files.grouplens.org/"
        )
        assert entry["sha256"] is None or len(entry["sha256"]) == 64
        assert tuple(entry["folders"]) == dataset.folders and entry["layout"] == dataset.layout
        assert tuple(entry["members"]) == dataset.members
        spec = layout_entries[entry["layout"]]
        assert tuple(spec["ratings"]) == layout.ratings and spec["titles"] == layout.items
        assert spec["separator"] == layout.sep and spec["encoding"] == layout.encoding
    comment = document["_comment"]
    assert "md5" in comment and "pin" in comment
    for entry in entries.values():
        md5 = entry["md5_third_party"]
        assert md5 is None or re.fullmatch("[0-9a-f]{32}", md5)


# ---------------------------------------------------------------------------------------------
# Downloads with only an md5 recorded (the registry's sha256 values are all null).
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def ml100k_zip(tmp_path, monkeypatch) -> dict:
    """A small ml-100k zip that ``_fetch`` "downloads", with its sha256 and md5."""
    archive = tmp_path / "ml-100k.zip"
    sha256 = make_zip(
        archive,
        {"ml-100k/u.data": "1\t5\t3\n", "ml-100k/u.item": "5|Five (1995)|x\n", "ml-100k/u.x": "."},
    )
    monkeypatch.setattr(datasets, "_fetch", lambda url, dest: shutil.copyfile(archive, dest))
    return {"sha256": sha256, "md5": hashlib.md5(archive.read_bytes()).hexdigest()}


def test_download_verified_by_md5_logs_the_sha256_to_pin(
    places, tmp_path, monkeypatch, ml100k_zip, caplog
):
    md5, sha256 = ml100k_zip["md5"], ml100k_zip["sha256"]
    use_registry(monkeypatch, tmp_path, "ml-100k", sha256=None, md5_third_party=md5.upper())
    cache = places["home"] / ".cache" / "als"
    with caplog.at_level(logging.WARNING, logger="als.datasets"):
        folder = find_dataset("ml-100k")
    assert folder == cache / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["u.data", "u.item"]
    assert f"matched the md5 {md5}" in caplog.text and f"its sha256 is {sha256}" in caplog.text
    assert f"pin it by setting ALS_SHA256_ML_100K={sha256}" in caplog.text
    assert "\n" not in caplog.records[-1].getMessage()
    assert load("ml-100k").item_title(0) == "Five (1995)"
    assert not list(cache.glob(".*"))  # no staging or download leftovers


def test_wrong_md5_is_refused_before_anything_is_unpacked(
    places, tmp_path, monkeypatch, ml100k_zip
):
    use_registry(monkeypatch, tmp_path, "ml-100k", sha256=None, md5_third_party="0" * 32)
    unpacked = []
    monkeypatch.setattr(datasets, "extract_archive", lambda *args, **kw: unpacked.append(args))
    with pytest.raises(ChecksumError, match=f"its md5 is {ml100k_zip['md5']}, expected 0000"):
        find_dataset("ml-100k")
    cache = places["home"] / ".cache" / "als"
    assert unpacked == []
    assert not (cache / "ml-100k").exists() and not list(cache.glob(".*"))


def test_a_known_sha256_is_checked_instead_of_the_md5(
    places, tmp_path, monkeypatch, ml100k_zip, caplog
):
    # A wrong sha256 in the registry fails even though the md5 matches.
    use_registry(
        monkeypatch, tmp_path, "ml-100k", sha256="ab" * 32, md5_third_party=ml100k_zip["md5"]
    )
    cache = places["home"] / ".cache" / "als"
    with pytest.raises(ChecksumError, match="expected abab"):
        find_dataset("ml-100k")
    assert not (cache / "ml-100k").exists()
    # The right sha256 from the environment wins over a wrong md5, and nothing asks to pin.
    use_registry(monkeypatch, tmp_path, "ml-100k", sha256=None, md5_third_party="0" * 32)
    monkeypatch.setenv("ALS_SHA256_ML_100K", ml100k_zip["sha256"])
    with caplog.at_level(logging.WARNING, logger="als.datasets"):
        assert find_dataset("ml-100k") == cache / "ml-100k"
    assert "pin it" not in caplog.text


def test_the_real_registry_allows_md5_checked_downloads_only_where_an_md5_is_pinned(monkeypatch):
    for name in ("ML_1M", "LASTFM_2K"):
        monkeypatch.delenv(f"ALS_SHA256_{name}", raising=False)
    ml1m = datasets.lookup_dataset("ml-1m")
    assert ml1m.sha256 is None and ml1m.md5 == "c4d9eecfca2ab87c1945afe126590906"
    assert datasets._download_refusal(ml1m, download=True) is None
    refusal = datasets._download_refusal(datasets.lookup_dataset("lastfm-2k"), download=True)
    assert "ALS_SHA256_LASTFM_2K" in refusal
