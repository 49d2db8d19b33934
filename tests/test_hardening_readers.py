"""Readers take files as people make them: byte-order marks, separators inside titles,
damaged gzip files, and search folders that cannot be read."""

from __future__ import annotations

import gzip
import logging
import os

import pytest

from als.data import DataFormatError, DatasetNotFoundError, load, read_table
from als.datasets import find_dataset
from als.readers import read_titles_table

BOM = b"\xef\xbb\xbf"


def test_csv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "plays.csv"
    path.write_bytes(BOM + b"user,item,weight\n1,10,2\n2,10,1\n2,11,4\n")
    data = read_table(path)
    assert data.shape == (2, 2) and data.nnz == 3
    zipped = tmp_path / "plays.csv.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert read_table(zipped).nnz == 3


def test_titles_table_with_a_byte_order_mark_and_separators_in_titles(tmp_path):
    path = tmp_path / "titles.csv"
    path.write_bytes(
        BOM + b'item,title\n1,"Quoted, Title"\n2,Hello, World\n3,Plain\n4,\n'
    )
    assert read_titles_table(path) == {
        1: "Quoted, Title",
        2: "Hello, World",
        3: "Plain",
        4: "",
    }
    tabs = tmp_path / "titles.tsv"
    tabs.write_text("id\ttitle\nA\tOne\tTwo\nB\tThree\n", encoding="utf-8")
    assert read_titles_table(tabs) == {"A": "One\tTwo", "B": "Three"}


@pytest.mark.parametrize(
    "ratings, ratings_text, items, items_text, title",
    [
        (
            "ratings.dat",
            "1::1::5::0\n2::1::3::0\n",
            "movies.dat",
            "1::Two Parts:: The Sequel (1999)::Drama|Comedy\n",
            "Two Parts:: The Sequel (1999)",
        ),
        (
            "u.data",
            "1\t1\t5\t0\n2\t1\t3\t0\n",
            "u.item",
            "1|A|B (1995)|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n",
            "A|B (1995)",
        ),
        (
            "user_artists.dat",
            "userID\tartistID\tweight\n1\t1\t5\n2\t1\t3\n",
            "artists.dat",
            "id\tname\turl\tpictureURL\n1\tTab\tBand\thttp://a\thttp://b\n",
            "Tab\tBand",
        ),
    ],
    ids=["movies.dat", "u.item", "artists.dat"],
)
def test_titles_containing_the_separator_are_kept_whole(
    tmp_path, ratings, ratings_text, items, items_text, title
):
    (tmp_path / ratings).write_text(ratings_text, encoding="utf-8")
    (tmp_path / items).write_text(items_text, encoding="utf-8")
    data = load(tmp_path)
    assert data.item_title(0) == title


def test_a_layout_file_with_a_byte_order_mark(tmp_path):
    (tmp_path / "ratings.dat").write_bytes(BOM + b"1::1::5::0\n2::1::3::0\n")
    (tmp_path / "movies.dat").write_bytes(BOM + "1::Café (1999)::Drama\n".encode())
    data = load(tmp_path)
    assert data.nnz == 2 and data.item_title(0) == "Café (1999)"


def test_a_damaged_gzip_file_is_a_data_format_error(tmp_path):
    path = tmp_path / "plays.csv.gz"
    path.write_bytes(gzip.compress(b"user,item,weight\n" + b"1,2,3\n" * 1000)[:-30])
    with pytest.raises(DataFormatError, match="plays.csv.gz.*truncated"):
        read_table(path)


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


def test_special_files_are_not_read_as_data(tmp_path):
    fifo = tmp_path / "plays.csv"
    os.mkfifo(fifo)
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    for path in (fifo, link, tmp_path):
        with pytest.raises(FileNotFoundError, match="not a regular file"):
            read_table(path if path != tmp_path else tmp_path / ".")
