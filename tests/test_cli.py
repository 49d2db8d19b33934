"""The command lines end to end, in subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import DATA_DIR, dataset_path

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check_exit=0):
    """Run ``python -m <args>`` from the repository root; return the completed process."""
    env = {**os.environ, "ALS_DATA_DIR": str(DATA_DIR), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == check_exit, done.stderr
    return done


@pytest.fixture(scope="module")
def trained_100k(tmp_path_factory):
    """One ml-100k training run with a new user, saved, with its JSON summary."""
    dataset_path("ml-100k", "u.data")
    path = tmp_path_factory.mktemp("cli") / "model.npz"
    done = run(
        "als.train",
        "--data",
        "ml-100k",
        "--factors",
        "16",
        "--iterations",
        "4",
        "--like",
        "Star Wars (1977)",
        "--like",
        "Fargo (1996)",
        "--similar",
        "Fargo (1996)",
        "--save",
        str(path),
        "--json",
        "--quiet",
        "-N",
        "10",
    )
    return path, json.loads(done.stdout), done.stderr


def test_train_reports_counts_speed_metrics_and_answers(trained_100k):
    _, summary, report = trained_100k
    assert summary["data"] == {
        **summary["data"],
        "users": 944,
        "items": 1682,
        "interactions": 100_002,
    }
    assert "ml-100k: 100,002 ratings, 944 users, 1,682 items" in report
    assert "s per iteration" in report and "held-out" in report
    assert set(summary["metrics"]) == {"k", "precision", "map", "ndcg", "auc"}
    assert 0 < summary["metrics"]["precision"] <= 1
    assert len(summary["training"]["loss"]) == 4
    recommended = [entry["title"] for entry in summary["recommendations"]["items"]]
    assert len(recommended) == 10
    assert "Star Wars (1977)" not in recommended and "Fargo (1996)" not in recommended
    similar = summary["similar"]["Fargo (1996)"]
    assert similar and all(entry["title"] != "Fargo (1996)" for entry in similar)
    explanation = summary["explanations"][recommended[0]]
    assert {entry["title"] for entry in explanation["because_of"]} <= {
        "Star Wars (1977)",
        "Fargo (1996)",
    }


def test_saved_model_answers_the_same_without_training(trained_100k):
    path, summary, _ = trained_100k
    new_user = summary["recommendations"]["user"]
    done = run("als.recommend", str(path), "--user", new_user, "-N", "10", "--json")
    again = json.loads(done.stdout)["recommendations"]
    assert [e["item"] for e in again] == [e["item"] for e in summary["recommendations"]["items"]]
    np.testing.assert_allclose(
        [e["score"] for e in again],
        [e["score"] for e in summary["recommendations"]["items"]],
        rtol=1e-6,
    )
    text = run(
        "als.recommend", str(path), "--like", "Fargo (1996)", "--explain", "Star Wars (1977)"
    ).stdout
    assert "top 20 for a new user" in text and "why a new user gets Star Wars (1977)" in text


@pytest.fixture
def table(tmp_path):
    """A small plays table with string ids, and its titles."""
    path = tmp_path / "plays.csv"
    rows = ["listener,track,plays"]
    rng = np.random.default_rng(0)
    for user in range(40):
        for track in rng.choice(30, size=8, replace=False):
            rows.append(f"u{user},t{track},{rng.integers(1, 20)}")
    path.write_text("\n".join(rows) + "\n")
    titles = tmp_path / "titles.csv"
    titles.write_text("track,title\n" + "".join(f"t{i},Song {i}\n" for i in range(30)))
    return path, titles


def test_generic_table_with_titles(table):
    path, titles = table
    done = run(
        "als.train",
        "--data",
        str(path),
        "--user-col",
        "listener",
        "--item-col",
        "track",
        "--weight-col",
        "plays",
        "--titles",
        str(titles),
        "--factors",
        "4",
        "--iterations",
        "2",
        "--like",
        "Song 3",
        "--quiet",
        "--backend",
        "numpy",
    )
    assert "plays.csv: 321 interactions, 41 users, 30 items" in done.stdout
    assert "read 320 records" in done.stdout
    assert "Song" in done.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--like", "Song 99"], "No item titled 'Song 99'"),
        (["--like", "song 3x"], "close matches: Song 3"),
        (["--user-col", "person"], "person"),
        (["--min-weight", "1000"], "left no interactions"),
        (["--factors", "0"], "factors must be >= 1"),
        (["--test-fraction", "1.5"], "--test-fraction"),
    ],
    ids=[
        "unknown-title",
        "close-match",
        "unknown-column",
        "empty-after-filter",
        "factors",
        "test-fraction",
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(table, args, message):
    path, titles = table
    base = [
        "als.train",
        "--data",
        str(path),
        "--titles",
        str(titles),
        "--quiet",
        "--iterations",
        "1",
        "--factors",
        "2",
        "--backend",
        "numpy",
    ]
    if "--user-col" not in args:
        base += ["--user-col", "listener"]
    done = run(*base, "--item-col", "track", "--weight-col", "plays", *args, check_exit=2)
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message.lower() in last.lower()


def test_bad_files_give_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,weight\n1,2,3\n1,3,lots\n")
    done = run("als.train", "--data", str(bad), "--quiet", check_exit=2)
    assert "line 3" in done.stderr and "lots" in done.stderr and "Traceback" not in done.stderr
    done = run("als.train", "--data", str(tmp_path / "missing.csv"), check_exit=2)
    assert "missing.csv" in done.stderr and "Traceback" not in done.stderr
    done = run("als.recommend", str(tmp_path / "missing.npz"), "--user", "1", check_exit=2)
    assert "missing.npz" in done.stderr
    done = run("als.recommend", str(bad), "--user", "1", check_exit=2)
    assert "not a readable model file" in done.stderr


def test_help_documents_every_option():
    text = run("als.train", "--help").stdout
    for option in (
        "--data",
        "--user-col",
        "--item-col",
        "--weight-col",
        "--titles",
        "--min-weight",
        "--alpha",
        "--factors",
        "--regularization",
        "--iterations",
        "--cg-steps",
        "--dtype",
        "--seed",
        "--backend",
        "--threads",
        "--test-fraction",
        "--k",
        "--save",
        "--json",
        "--like",
        "--similar",
        "--explain",
    ):
        assert option in text


def test_without_data_runs_the_reference_workflow():
    dataset_path("ml-1m", "ratings.dat.gz")
    done = run("als.train", "--factors", "16", "--iterations", "2", "--quiet", "--json")
    summary = json.loads(done.stdout)
    # ratings >= 3 (836,478 on 6,039 users and 3,628 films) plus a new user with five films
    assert summary["data"]["interactions"] == 836_478 + 5
    assert (summary["data"]["users"], summary["data"]["items"]) == (6_040, 3_628)
    titles = [entry["title"] for entry in summary["recommendations"]["items"]]
    assert len(titles) == 20 and "Toy Story (1995)" not in titles
    assert "reference workflow" in done.stderr
