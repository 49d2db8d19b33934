"""Tests of als.data: loaders, id maps, filtering, bad input, and finding/downloading data sets.

Small files are written into ``tmp_path`` by the tests. The real MovieLens / Last.fm files are
read from ``$ALS_DATA_DIR`` (default ``../shared/data``) and those tests skip when absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import als.data as data
from als.data import (
    AmbiguousItemError,
    ChecksumError,
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    EmptyDataError,
    Interactions,
    UnknownColumnError,
    UnknownDatasetError,
    UnknownItemError,
    UnknownUserError,
    UnsafeArchiveError,
    extract_archive,
    find_dataset,
    from_dataframe,
    load,
    load_users,
    read_table,
)

SHARED_DATA = Path(os.environ.get("ALS_DATA_DIR") or Path(__file__).parents[2] / "shared" / "data")


def write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    """Write ``text`` (with ``\\n`` line ends turned into ``newline``) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def assert_canonical(matrix: sp.csr_matrix) -> None:
    assert isinstance(matrix, sp.csr_matrix)
    assert matrix.dtype == np.float32
    assert matrix.has_canonical_format
    assert not (matrix.data == 0).any()


def dense(interactions: Interactions) -> dict:
    """{(raw user, raw item): weight} of every stored entry."""
    frame = interactions.to_frame()
    return {(u, i): w for u, i, w in zip(frame.user, frame.item, frame.weight, strict=True)}


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::10::5::978300760\n1::20::3::978302109\n\n2::10::4::97830\n")
    write(
        folder / "movies.dat",
        "10::Misérables, Les (1995)::Drama|Musical\n20::Toy Story (1995)::Animation\n"
        "30::Never Rated (1999)::Drama\n",
        encoding="iso-8859-1",
    )
    return folder


# ---------------------------------------------------------------------------------------------
# Loaders on small files.
# ---------------------------------------------------------------------------------------------


def test_ml1m_layout_with_latin1_titles_and_blank_lines(ml1m_dir):
    ratings = load(ml1m_dir)
    assert ratings.name == "ml-1m"
    assert ratings.shape == (2, 2) and ratings.nnz == 3
    assert_canonical(ratings.user_items)
    assert ratings.user_ids.tolist() == [1, 2] and ratings.item_ids.tolist() == [10, 20]
    assert dense(ratings) == {(1, 10): 5.0, (1, 20): 3.0, (2, 10): 4.0}
    assert ratings.item_title(0) == "Misérables, Les (1995)"
    assert ratings.headline() == "ml-1m: 3 ratings, 2 users, 2 items"
    assert str(ratings).startswith(ratings.headline())


def test_ml1m_gz_three_field_lines_and_file_preference(tmp_path):
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    with gzip.open(folder / "ratings.dat.gz", "wt") as handle:
        handle.write("1::10::5\n1::20::3::978302109\n2::10::4\n")
    with gzip.open(folder / "ratings.part-users-0001-2999.dat.gz", "wt") as handle:
        handle.write("9::99::1::1\n")
    assert dense(load(folder)) == {(1, 10): 5.0, (1, 20): 3.0, (2, 10): 4.0}
    write(folder / "ratings.dat", "7::70::2\n")  # the plain file wins over the .gz
    assert dense(load(folder)) == {(7, 70): 2.0}
    assert dense(load(folder / "ratings.dat.gz")) == {(1, 10): 5.0, (1, 20): 3.0, (2, 10): 4.0}


def test_ml100k_layout(tmp_path):
    folder = tmp_path / "ml-100k"
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\n")
    write(
        folder / "u.item",
        "242|Kolya (1996)|24-Jan-1997||http://x|0|0\n302|Véronique (1991)|01-Jan-1991||x|0\n",
        encoding="iso-8859-1",
    )
    ratings = load(folder)
    assert ratings.name == "ml-100k" and ratings.shape == (3, 2)
    assert ratings.item_title(ratings.item_index(302)) == "Véronique (1991)"
    assert ratings.title_index("Kolya (1996)") == ratings.item_index(242)


def test_lastfm_layout_crlf_header_no_final_newline(tmp_path):
    folder = tmp_path / "hetrec2011-lastfm-2k"
    write(
        folder / "user_artists.dat",
        "userID\tartistID\tweight\n2\t51\t13883\n2\t52\t11690\n3\t51\t7",
        newline="\r\n",
    )
    write(
        folder / "artists.dat",
        'id\tname\turl\tpictureURL\n51\tDuran "D" Duran\tu\tp\n52\tMorcheeba\tu\tp\n',
    )
    plays = load(folder)
    assert plays.name == "lastfm-2k" and plays.unit == "interactions"
    assert dense(plays) == {(2, 51): 13883.0, (2, 52): 11690.0, (3, 51): 7.0}
    assert plays.item_title(0) == 'Duran "D" Duran'


def test_movielens_csv_layout(tmp_path):
    folder = tmp_path / "ml-latest-small"
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,1\n",
    )
    write(
        folder / "movies.csv",
        'movieId,title,genres\n1,"American President, The (1995)",Comedy\n3,Heat (1995),Action\n',
    )
    ratings = load(folder)
    assert ratings.name == "ml-latest-small"
    assert dense(ratings) == {(1, 1): 4.0, (1, 3): 4.5, (2, 1): 0.5}
    assert ratings.title_index("american president, the (1995)") == 0


def test_generic_csv_with_string_ids_and_named_columns(tmp_path):
    path = write(
        tmp_path / "plays.csv", "listener,track,plays,extra\nann,t1,3,x\nbob,t1,1,y\nann,t2,2,z\n"
    )
    plays = read_table(path, "listener", "track", "plays")
    assert plays.user_ids.dtype.kind == "U" and plays.user_ids.tolist() == ["ann", "bob"]
    assert dense(plays) == {("ann", "t1"): 3.0, ("bob", "t1"): 1.0, ("ann", "t2"): 2.0}
    assert plays.user_index("bob") == 1
    assert load(path, user_col="listener", item_col="track", weight_col="plays").nnz == 3


def test_generic_csv_finds_columns_and_defaults_weight_to_one(tmp_path):
    path = write(tmp_path / "likes.tsv", "UserID\tItem_ID\n1\ta\n2\ta\n")
    likes = load(path)
    assert likes.user_ids.dtype == np.int64
    assert dense(likes) == {(1, "a"): 1.0, (2, "a"): 1.0}
    assert any("every row weighs 1" in step for step in likes.history)


def test_parquet_and_dataframe(tmp_path):
    frame = pd.DataFrame({"user": ["u1", "u2", "u1"], "item": [5, 5, 6], "weight": [1.0, 2.0, 3.0]})
    from_frame = load(frame, name="frame")
    assert from_frame.headline() == "frame: 3 interactions, 2 users, 2 items"
    assert from_frame.item_ids.dtype == np.int64
    pytest.importorskip("pyarrow", reason="pyarrow is needed for Parquet")
    frame.to_parquet(tmp_path / "t.parquet")
    assert dense(load(tmp_path / "t.parquet")) == dense(from_frame)


def test_dataframe_titles_from_a_column():
    frame = pd.DataFrame({"user": [1, 2], "item": [7, 8], "rating": [5, 4], "title": ["A", "B"]})
    ratings = from_dataframe(frame, title_col="title")
    assert ratings.title_index("b") == 1


def test_duplicates_are_summed_and_reported(tmp_path, caplog):
    path = write(tmp_path / "d.csv", "user,item,weight\n1,1,1\n1,1,2\n2,1,1\n1,1,4\n")
    with caplog.at_level(logging.WARNING, logger="als.data"):
        summed = load(path)
    assert summed.n_duplicates == 2 and dense(summed)[(1, 1)] == 7.0
    assert "merged 2 duplicate" in summed.summary() and "duplicate" in caplog.text
    assert dense(load(path, duplicates="max"))[(1, 1)] == 4.0
    assert dense(load(path, duplicates="first"))[(1, 1)] == 1.0
    assert dense(load(path, duplicates="last"))[(1, 1)] == 4.0
    with pytest.raises(DataFormatError, match=r"\(user 1, item 1\) appears more than once"):
        load(path, duplicates="error")


def test_zero_weights_are_dropped_and_reported(tmp_path):
    ratings = load(write(tmp_path / "z.csv", "user,item,weight\n1,1,0\n1,2,1\n2,1,-1\n"))
    assert dense(ratings) == {(1, 2): 1.0, (2, 1): -1.0}
    assert "dropped 1 rows with weight 0" in ratings.summary()


# ---------------------------------------------------------------------------------------------
# Bad input.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("1::20", "expected 3 or 4 fields"),
        ("1::20::5::1::9", "expected 3 or 4 fields"),
        ("1::x::5", "item id 'x' is not an integer"),
        ("1::20::abc", "weight 'abc' is not a number"),
        ("1::20::nan", "not a finite number"),
        ("1::20::inf", "not a finite number"),
    ],
)
def test_bad_line_reports_number_and_text(tmp_path, line, problem):
    path = write(tmp_path / "ml-1m" / "ratings.dat", f"1::10::5\n\n{line}\n2::10::4\n")
    with pytest.raises(DataFormatError, match=problem) as caught:
        load(path)
    assert caught.value.line_number == 3 and caught.value.line == line
    assert "line 3: " in str(caught.value) and repr(line) in str(caught.value)
    assert "\n" not in str(caught.value)
    skipped = load(path, on_bad_lines="skip")
    assert skipped.n_bad_lines == 1 and skipped.nnz == 2
    assert "skipped 1 bad lines" in skipped.summary()


def test_bad_first_line_longer_than_expected_is_not_truncated(tmp_path):
    path = write(tmp_path / "u.data", "1\t2\t3\t4\t5\n1\t3\t4\n")
    with pytest.raises(DataFormatError, match="line 1: expected 3 or 4 fields"):
        load(path)


def test_bad_csv_lines_and_skip_counts(tmp_path):
    path = write(tmp_path / "t.csv", "user,item,weight\na,b,1\n,b,2\na,c,zz\na,d,3,extra\nb,b,1\n")
    with pytest.raises(DataFormatError, match="line 3: the user id is empty"):
        load(path)
    skipped = load(path, on_bad_lines="skip")
    assert skipped.n_bad_lines == 3 and dense(skipped) == {("a", "b"): 1.0, ("b", "b"): 1.0}


def test_dataframe_bad_weights():
    frame = pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 1], "weight": [1.0, np.nan, "x"]})
    with pytest.raises(DataFormatError, match=r"row 1 \(index 1\): the weight nan is not a finite"):
        from_dataframe(frame)
    assert from_dataframe(frame, on_bad_lines="skip").n_bad_lines == 2


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load(missing)
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        load(tmp_path)  # a folder without a ratings file


def test_unknown_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", "who,what,how_much\n1,2,3\n")
    with pytest.raises(UnknownColumnError, match="its columns are who, what, how_much"):
        load(path)
    with pytest.raises(UnknownColumnError, match="no column 'rating'") as caught:
        load(path, user_col="who", item_col="what", weight_col="rating")
    assert not str(caught.value).startswith("'")  # not KeyError's quoted message
    with pytest.raises(UnknownColumnError, match="its columns are user, x"):
        from_dataframe(pd.DataFrame({"user": [1], "x": [2]}))


def test_empty_inputs(tmp_path):
    with pytest.raises(EmptyDataError):
        load(write(tmp_path / "e.csv", ""))
    with pytest.raises(EmptyDataError):
        load(write(tmp_path / "ml-1m" / "ratings.dat", "\n\n"))
    ratings = load(write(tmp_path / "t.csv", "user,item,weight\n1,1,1\n"))
    with pytest.raises(EmptyDataError, match="left no interactions"):
        ratings.filter(min_weight=2)


def test_bad_encoding_is_a_format_error(tmp_path):
    path = write(tmp_path / "t.csv", "user,item\n1,\xe9\n", encoding="iso-8859-1")
    with pytest.raises(DataFormatError, match="line 2: bytes that are not valid utf-8"):
        load(path)
    assert load(path, encoding="iso-8859-1").item_ids.tolist() == ["é"]


def test_argument_choices_are_checked(tmp_path, ml1m_dir):
    with pytest.raises(ValueError, match="on_bad_lines must be one of"):
        load(ml1m_dir, on_bad_lines="warn")
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load(ml1m_dir, duplicates="mean")


# ---------------------------------------------------------------------------------------------
# Interactions: lookups, filtering, new users, array round trip.
# ---------------------------------------------------------------------------------------------


def test_lookups_and_errors(ml1m_dir):
    ratings = load(ml1m_dir)
    assert ratings.user_index(2) == ratings.user_index("2") == ratings.user_index(np.int64(2)) == 1
    assert ratings.user_id(1) == 2 and isinstance(ratings.user_id(1), int)
    assert ratings.title_index("toy story (1995)") == ratings.title_index(" Toy Story (1995) ") == 1
    with pytest.raises(
        UnknownUserError, match=r"Unknown user id 99 in ml-1m \(2 users, ids 1..2\)"
    ):
        ratings.user_index(99)
    with pytest.raises(UnknownItemError, match="Unknown item id 11"):
        ratings.item_index(11)
    with pytest.raises(UnknownItemError, match="close matches: Toy Story") as caught:
        ratings.title_index("Toy Story")
    assert caught.value.suggestions == ["Toy Story (1995)"]
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, DataError)
    with pytest.raises(UnknownItemError, match="No item titled 'Never Rated"):
        ratings.title_index("Never Rated (1999)")  # in movies.dat, but nobody rated it


def test_ambiguous_title():
    frame = pd.DataFrame({"user": [1, 1], "item": [7, 8], "weight": [1, 1], "t": ["Same", "Same"]})
    ratings = from_dataframe(frame, title_col="t")
    with pytest.raises(AmbiguousItemError, match=r"ids 7, 8") as caught:
        ratings.resolve_item("Same")
    assert caught.value.candidates == [7, 8]
    assert ratings.resolve_item(8) == 1


def test_filter_fixed_point_versus_one_pass():
    # user 3 has 2 items; item 30 is rated only by user 3; dropping item 30 (min 2) leaves user 3
    # with one item, which then goes too when iterating.
    frame = pd.DataFrame(
        {
            "user": [1, 1, 2, 2, 3, 3],
            "item": [10, 20, 10, 20, 10, 30],
            "weight": [5, 4, 3, 2, 5, 1],
        }
    )
    ratings = from_dataframe(frame)
    fixed = ratings.filter(min_user_interactions=2, min_item_interactions=2)
    assert fixed.user_ids.tolist() == [1, 2] and fixed.item_ids.tolist() == [10, 20]
    once = ratings.filter(min_user_interactions=2, min_item_interactions=2, iterate=False)
    assert once.user_ids.tolist() == [1, 2, 3] and once.user_items[2].nnz == 1
    strong = ratings.filter(min_weight=3)
    assert strong.user_ids.tolist() == [1, 2, 3] and strong.item_ids.tolist() == [10, 20]
    assert dense(strong) == {(1, 10): 5, (1, 20): 4, (2, 10): 3, (3, 10): 5}
    assert_canonical(strong.user_items)
    assert "kept 4 of 6 interactions, 3 of 3 users, 2 of 3 items" in strong.summary()
    with pytest.raises(ValueError, match="min_user_interactions must be an integer >= 1"):
        ratings.filter(min_user_interactions=0)


def test_add_user_by_title_and_id(ml1m_dir):
    ratings = load(ml1m_dir)
    more = ratings.add_user(["toy story (1995)", 10], weights=[4, 5])
    assert more.n_users == 3 and ratings.n_users == 2  # the original is unchanged
    assert more.user_id(2) == 3 and more.user_ids.dtype == np.int64
    assert dense(more)[(3, 20)] == 4.0 and dense(more)[(3, 10)] == 5.0
    assert_canonical(more.user_items)
    assert more.add_user("Toy Story (1995)", user_id=100).user_index(100) == 3
    row = ratings.user_row(["Toy Story (1995)"], weights=5)
    assert row.shape == (1, 2) and row.toarray().tolist() == [[0.0, 5.0]]
    with pytest.raises(ValueError, match="already exists"):
        ratings.add_user([10], user_id=1)
    with pytest.raises(ValueError, match="listed more than once"):
        ratings.add_user([10, "Misérables, Les (1995)"])
    with pytest.raises(ValueError, match="finite and non-zero"):
        ratings.add_user([10], weights=0)
    with pytest.raises(ValueError, match="Got 2 weights for 1 liked items"):
        ratings.add_user([10], weights=[1, 2])
    with pytest.raises(UnknownItemError):
        ratings.add_user(["No Such Film"])


def test_add_user_with_string_ids():
    plays = from_dataframe(pd.DataFrame({"user": ["a"], "item": ["x"], "weight": [1]}))
    more = plays.add_user(["x"]).add_user(["x"])
    assert more.user_ids.tolist() == ["a", "new-user", "new-user-2"]


@pytest.mark.parametrize("string_ids", [False, True])
def test_arrays_round_trip_through_npz(tmp_path, ml1m_dir, string_ids):
    ratings = load(ml1m_dir).add_user([20], weights=2)
    if string_ids:
        frame = ratings.to_frame().astype({"user": str})
        ratings = from_dataframe(frame, titles={10: "Ten"}, name="s")
    arrays = ratings.to_arrays("data_")
    assert all(a.dtype.kind in "iufU" for a in arrays.values())
    np.savez(tmp_path / "m.npz", model_factors=np.zeros(3), **arrays)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as stored:
        back = Interactions.from_arrays(stored, prefix="data_")
    assert back.summary() == ratings.summary()
    assert back.user_ids.tolist() == ratings.user_ids.tolist()
    assert back.item_title(0) == ratings.item_title(0)
    assert (back.user_items != ratings.user_items).nnz == 0
    bare = Interactions.from_arrays(ratings.to_arrays("p_", include_matrix=False), prefix="p_")
    assert bare.shape == ratings.shape and bare.nnz == 0


def test_constructor_canonicalises_and_freezes():
    matrix = sp.coo_matrix(([1.0, 2.0, 0.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    built = Interactions(matrix, [5, 6], ["a", "b"])
    assert_canonical(built.user_items) and built.user_items[0, 1] == 3.0
    with pytest.raises(ValueError, match="read-only"):
        built.user_ids[0] = 9
    with pytest.raises(ValueError, match="repeated ids"):
        Interactions(matrix, [5, 5], ["a", "b"])


# ---------------------------------------------------------------------------------------------
# Finding, downloading and unpacking.
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Three empty search roots: $ALS_DATA_DIR, the project data/ folder and $HOME."""
    roots = {name: tmp_path / name for name in ("env", "project", "home")}
    for root in roots.values():
        root.mkdir()
    monkeypatch.setenv("ALS_DATA_DIR", str(roots["env"]))
    monkeypatch.setenv("HOME", str(roots["home"]))
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", roots["project"])
    monkeypatch.delenv("ALS_SHA256_ML_100K", raising=False)

    def no_network(url, destination):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(data, "_fetch", no_network)
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


def test_offline_error_names_every_place(places, monkeypatch):
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
    monkeypatch.setattr(data, "_fetch", lambda url, dest: shutil.copyfile(archive, dest))
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
    registry = json.loads(data.REGISTRY_PATH.read_text(encoding="utf-8"))["datasets"]
    assert sorted(registry) == data.dataset_names()
    for name, entry in registry.items():
        dataset, layout = data._DATASETS[name], data._LAYOUTS[registry[name]["layout"]]
        assert entry["url"] == dataset.url and entry["url"].startswith(
            "https://files.grouplens.org/"
        )
        assert entry["sha256"] is None or len(entry["sha256"]) == 64
        assert tuple(entry["folders"]) == dataset.folders and entry["layout"] == dataset.layout
        assert tuple(entry["members"]) == dataset.members
        assert tuple(entry["ratings"]) == layout.ratings and entry["titles"] == layout.items
        assert entry["separator"] == layout.sep and entry["encoding"] == layout.encoding


def test_error_messages_are_single_lines(ml1m_dir):
    ratings = load(ml1m_dir)
    for call in (lambda: ratings.user_index("x"), lambda: ratings.title_index("Toy")):
        with pytest.raises(DataError) as caught:
            call()
        assert "\n" not in str(caught.value) and not str(caught.value).startswith(("'", '"'))


# ---------------------------------------------------------------------------------------------
# The real data sets in ../shared/data (counts from its SOURCES.md).
# ---------------------------------------------------------------------------------------------


def shared(folder: str) -> Path:
    path = SHARED_DATA / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent: set ALS_DATA_DIR to the folder holding {folder}/")
    return path


@pytest.fixture(scope="module")
def ml1m():
    start = time.perf_counter()
    ratings = load(shared("ml-1m"))
    return ratings, time.perf_counter() - start


@pytest.mark.data
def test_real_ml1m_counts_and_reference_workflow(ml1m):
    ratings, seconds = ml1m
    assert ratings.headline() == "ml-1m: 1,000,209 ratings, 6,040 users, 3,706 items"
    assert seconds < 10  # about 0.4 s on an idle core; generous for shared CI machines
    assert_canonical(ratings.user_items)
    assert ratings.user_ids.tolist() == list(range(1, 6041))
    users = load_users(shared("ml-1m"))
    assert list(users.columns) == ["user", "gender", "age", "occupation", "zip"]
    assert users.user.tolist() == list(range(1, 6041))
    liked = ratings.filter(min_weight=3)
    assert liked.headline() == "ml-1m: 836,478 ratings, 6,039 users, 3,628 items"
    favourites = [
        "Toy Story (1995)",
        "Heat (1995)",
        "Fargo (1996)",
        "Godfather, The (1972)",
        "matrix, the (1999)",
    ]
    me = liked.add_user(favourites, weights=5)
    assert me.n_users == 6040 and me.user_id(6039) == 6041
    assert me.user_items[6039].nnz == 5 and set(me.user_items[6039].data) == {5.0}
    assert me.item_title(me.item_index(73)) == "Misérables, Les (1995)"
    with pytest.raises(UnknownItemError, match="close matches: Toy Story \\(1995\\)"):
        me.title_index("Toy Story")


@pytest.mark.data
def test_real_ml100k_counts():
    ratings = load(shared("ml-100k"))
    assert ratings.headline() == "ml-100k: 100,000 ratings, 943 users, 1,682 items"
    assert ratings.filter(min_weight=3).nnz == 82_520
    users = load_users(shared("ml-100k"))
    assert len(users) == 943 and users.user.tolist() == list(range(1, 944))
    with pytest.raises(AmbiguousItemError):  # u.item lists some films twice under two ids
        ratings.title_index("Chairman of the Board (1998)")


@pytest.mark.data
def test_real_lastfm_counts():
    plays = load(shared("hetrec2011-lastfm-2k"))
    assert plays.headline() == "lastfm-2k: 92,834 interactions, 1,892 users, 17,632 items"
    assert plays.user_items.data.sum(dtype=np.float64) == 69_183_975
    assert plays.item_titles is not None and (plays.item_titles != "").all()
