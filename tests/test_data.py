"""Tests of als.data: Interactions (id maps, lookups, filtering, new users, arrays), building
it from records and DataFrames, and the real data sets end to end.

File formats and bad lines are in test_readers.py; finding, downloading and unpacking data sets
in test_datasets.py. The helpers here (``write``, ``dense``, ...) are shared with them. Small
files are written into ``tmp_path`` by the tests. The real MovieLens / Last.fm files are read
from ``$ALS_DATA_DIR`` (default ``../shared/data``) and those tests skip when absent.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import als.data
import als.datasets
import als.errors
import als.interactions
from als.data import (
    AmbiguousItemError,
    DataError,
    DataFormatError,
    EmptyDataError,
    Interactions,
    UnknownItemError,
    UnknownUserError,
    from_dataframe,
    load,
    load_users,
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


def make_ml1m_dir(tmp_path: Path) -> Path:
    """A tiny ml-1m folder: three ratings (and a blank line), ISO-8859-1 titles."""
    folder = tmp_path / "ml-1m"
    write(folder / "ratings.dat", "1::10::5::978300760\n1::20::3::978302109\n\n2::10::4::97830\n")
    write(
        folder / "movies.dat",
        "10::Misérables, Les (1995)::Drama|Musical\n20::Toy Story (1995)::Animation\n"
        "30::Never Rated (1999)::Drama\n",
        encoding="iso-8859-1",
    )
    return folder


@pytest.fixture
def ml1m_dir(tmp_path: Path) -> Path:
    return make_ml1m_dir(tmp_path)


# ---------------------------------------------------------------------------------------------
# Building from records and DataFrames: titles, duplicates, zeros, bad rows, arguments.
# ---------------------------------------------------------------------------------------------


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


def test_dataframe_bad_weights():
    frame = pd.DataFrame({"user": [1, 2, 3], "item": [1, 1, 1], "weight": [1.0, np.nan, "x"]})
    with pytest.raises(DataFormatError, match=r"row 1 \(index 1\): the weight nan is not a finite"):
        from_dataframe(frame)
    assert from_dataframe(frame, on_bad_lines="skip").n_bad_lines == 2


def test_empty_inputs(tmp_path):
    with pytest.raises(EmptyDataError):
        load(write(tmp_path / "e.csv", ""))
    with pytest.raises(EmptyDataError):
        load(write(tmp_path / "ml-1m" / "ratings.dat", "\n\n"))
    ratings = load(write(tmp_path / "t.csv", "user,item,weight\n1,1,1\n"))
    with pytest.raises(EmptyDataError, match="left no interactions"):
        ratings.filter(min_weight=2)


def test_argument_choices_are_checked(tmp_path, ml1m_dir):
    with pytest.raises(ValueError, match="on_bad_lines must be one of"):
        load(ml1m_dir, on_bad_lines="warn")
    with pytest.raises(ValueError, match="duplicates must be one of"):
        load(ml1m_dir, duplicates="mean")


def test_data_reexports_its_modules_public_names():
    assert als.data.Interactions is als.interactions.Interactions
    for name in als.errors.__all__:
        assert getattr(als.data, name) is getattr(als.errors, name)
        assert name in als.data.__all__
    assert als.data.PROJECT_DATA_DIR == als.datasets.PROJECT_DATA_DIR
    assert als.data.REGISTRY_PATH == als.datasets.REGISTRY_PATH


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
    with pytest.raises(UnknownItemError, match="did you mean: Toy Story") as caught:
        ratings.title_index("Toy Stroy (1995)")
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


def test_history_counts_liked_items_in_words():
    plays = from_dataframe(pd.DataFrame({"user": ["a", "a"], "item": ["x", "y"], "weight": 1}))
    assert plays.add_user(["x"]).history[-1] == "added user 'new-user' with 1 liked item"
    assert plays.add_user(["x", "y"]).history[-1] == "added user 'new-user' with 2 liked items"


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
    # without the year or the article, when one film fits; else the candidates, or near misses
    for typed in ("Toy Story", "the matrix", "Matrix", "Matrix (1999)", "Godfather"):
        assert me.title_index(typed) == me.title_index(me.item_title(me.resolve_item(typed)))
    assert me.item_title(me.title_index("Matrix")) == "Matrix, The (1999)"
    assert me.item_title(me.title_index("Godfather")) == "Godfather, The (1972)"
    with pytest.raises(AmbiguousItemError, match=r"5 items in ml-1m fit 'Hamlet': Hamlet \(1948\)"):
        me.title_index("Hamlet")
    with pytest.raises(UnknownItemError, match="did you mean: Star Wars: Episode I") as caught:
        me.title_index("Star Wars")
    assert "Star Wars: Episode IV - A New Hope (1977)" in caught.value.suggestions
    with pytest.raises(UnknownItemError, match=r"did you mean: Forrest Gump \(1994\)\?"):
        me.title_index("Forest Gump")


@pytest.mark.data
def test_real_ml100k_counts():
    ratings = load(shared("ml-100k"))
    assert ratings.headline() == "ml-100k: 100,000 ratings, 943 users, 1,682 items"
    assert ratings.filter(min_weight=3).nnz == 82_520
    users = load_users(shared("ml-100k"))
    assert len(users) == 943 and users.user.tolist() == list(range(1, 944))
    with pytest.raises(AmbiguousItemError):  # u.item lists some films twice under two ids
        ratings.title_index("Chairman of the Board (1998)")
    assert ratings.item_title(ratings.title_index("star wars")) == "Star Wars (1977)"
    with pytest.raises(UnknownItemError, match=r"did you mean: Star Wars \(1977\)\?"):
        ratings.title_index("Star Warz")


@pytest.mark.data
def test_real_lastfm_counts():
    plays = load(shared("hetrec2011-lastfm-2k"))
    assert plays.headline() == "lastfm-2k: 92,834 interactions, 1,892 users, 17,632 items"
    assert plays.user_items.data.sum(dtype=np.float64) == 69_183_975
    assert plays.item_titles is not None and (plays.item_titles != "").all()
    assert plays.item_title(plays.title_index("Beatles")) == "The Beatles"
    with pytest.raises(UnknownItemError, match="did you mean: Radiohead"):
        plays.title_index("radiohed")


def test_load_refuses_options_it_would_ignore(ml1m_dir):
    with pytest.raises(TypeError, match="unexpected keyword argument 'min_weight'"):
        load(ml1m_dir, min_weight=3)
    with pytest.raises(TypeError, match="sep does not apply to a folder"):
        load(ml1m_dir, sep=",")
    with pytest.raises(TypeError, match="sep does not apply to a DataFrame"):
        load(pd.DataFrame({"user": [1], "item": [2]}), sep=",")
    with pytest.raises(TypeError, match="title_col does not apply to a file"):
        load(ml1m_dir / "ratings.dat", title_col="title")
