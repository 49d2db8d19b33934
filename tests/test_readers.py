"""Tests of reading files (als.readers, through als.data.load / read_table): the data set
layouts (ml-1m, ml-100k, Last.fm 2k, MovieLens CSV), generic CSV/TSV/Parquet tables, gzip, and
bad lines, encodings, byte-order marks, separators inside titles, damaged gzip files, columns,
missing and special files; and read_titles_table (the CLI's --titles).
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pandas as pd
import pytest

from als.data import DataFormatError, UnknownColumnError, from_dataframe, load, read_table
from als.readers import read_titles_table
from tests.test_data import assert_canonical, dense, make_ml1m_dir, write

BOM = b"\xef\xbb\xbf"


@pytest.fixture
def ml1m_dir(tmp_path):
    return make_ml1m_dir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Data set layouts and generic tables.
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


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load(missing)
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        load(tmp_path)  # a folder without a ratings file


def test_special_files_are_not_read_as_data(tmp_path):
    fifo = tmp_path / "plays.csv"
    os.mkfifo(fifo)
    link = tmp_path / "zero.csv"
    link.symlink_to("/dev/zero")
    for path in (fifo, link, tmp_path):
        with pytest.raises(FileNotFoundError, match="not a regular file"):
            read_table(path if path != tmp_path else tmp_path / ".")


def test_unknown_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "t.csv", "who,what,how_much\n1,2,3\n")
    with pytest.raises(UnknownColumnError, match="its columns are who, what, how_much"):
        load(path)
    with pytest.raises(UnknownColumnError, match="no column 'rating'") as caught:
        load(path, user_col="who", item_col="what", weight_col="rating")
    assert not str(caught.value).startswith("'")  # not KeyError's quoted message
    with pytest.raises(UnknownColumnError, match="its columns are user, x"):
        from_dataframe(pd.DataFrame({"user": [1], "x": [2]}))


def test_bad_encoding_is_a_format_error(tmp_path):
    path = write(tmp_path / "t.csv", "user,item\n1,\xe9\n", encoding="iso-8859-1")
    with pytest.raises(DataFormatError, match="line 2: bytes that are not valid utf-8"):
        load(path)
    assert load(path, encoding="iso-8859-1").item_ids.tolist() == ["é"]


def test_csv_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "plays.csv"
    path.write_bytes(BOM + b"user,item,weight\n1,10,2\n2,10,1\n2,11,4\n")
    data = read_table(path)
    assert data.shape == (2, 2) and data.nnz == 3
    zipped = tmp_path / "plays.csv.gz"
    zipped.write_bytes(gzip.compress(path.read_bytes()))
    assert read_table(zipped).nnz == 3


def test_a_damaged_gzip_file_is_a_data_format_error(tmp_path):
    path = tmp_path / "plays.csv.gz"
    path.write_bytes(gzip.compress(b"user,item,weight\n" + b"1,2,3\n" * 1000)[:-30])
    with pytest.raises(DataFormatError, match="plays.csv.gz.*truncated"):
        read_table(path)


def test_read_titles_table(tmp_path):
    path = write(tmp_path / "titles.tsv", "id\ttitle\textra\n7\tHeat (1995)\tx\n8\t\ty\n")
    titles = read_titles_table(path)
    assert titles == {7: "Heat (1995)", 8: ""}
    assert all(type(key) is int for key in titles)
    strings = read_titles_table(write(tmp_path / "t.csv", "track,title\nt1,001\n"))
    assert strings == {"t1": "001"}  # titles stay str, even when they look like numbers
    with pytest.raises(ValueError, match="empty.csv has no rows"):
        read_titles_table(write(tmp_path / "empty.csv", "id,title\n"))
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_titles_table(tmp_path / "nope.csv")


def test_titles_table_with_a_byte_order_mark_and_separators_in_titles(tmp_path):
    path = tmp_path / "titles.csv"
    path.write_bytes(BOM + b'item,title\n1,"Quoted, Title"\n2,Hello, World\n3,Plain\n4,\n')
    assert read_titles_table(path) == {
        1: "Quoted, Title",
        2: "Hello, World",
        3: "Plain",
        4: "",
    }
    tabs = tmp_path / "titles.tsv"
    tabs.write_text("id\ttitle\nA\tOne\tTwo\nB\tThree\n", encoding="utf-8")
    assert read_titles_table(tabs) == {"A": "One\tTwo", "B": "Three"}
