"""The command lines end to end, in subprocesses, as a user runs them."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from als.recommend import build_parser as recommend_parser
from als.train import REFERENCE, build_parser
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
        "--evaluate",
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
    # the answers come from the model trained on everything; metrics from a second fit
    assert summary["training"]["interactions"] == 100_002
    metrics = summary["evaluation"]
    assert set(metrics) == {"test_fraction", "k", "precision", "map", "ndcg", "auc", "training"}
    assert 0 < metrics["precision"] <= 1
    assert metrics["training"]["interactions"] < 100_002 * 0.85
    assert len(summary["training"]["loss"]) == 4
    assert summary["parameters"]["factors"] == 16 and summary["seed"] == 0
    recommended = [entry["title"] for entry in summary["recommendations"]]
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
    new_user = summary["user"]
    done = run("als.recommend", str(path), "--user", new_user, "-N", "10", "--json")
    again = json.loads(done.stdout)["recommendations"]
    assert [e["item"] for e in again] == [e["item"] for e in summary["recommendations"]]
    np.testing.assert_allclose(
        [e["score"] for e in again],
        [e["score"] for e in summary["recommendations"]],
        rtol=1e-6,
    )
    text = run(
        "als.recommend", str(path), "--like", "Fargo (1996)", "--explain", "Star Wars (1977)"
    ).stdout
    assert "top 20 for a new user" in text and "why a new user would like Star Wars (1977)" in text


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
        (["--like", "song 3x"], "did you mean: Song 3"),
        (["--user-col", "person"], "person"),
        (["--min-weight", "1000"], "left no interactions"),
        (["--factors", "0"], "argument --factors: must be >= 1"),
        (["--test-fraction", "1.5"], "--test-fraction"),
        (["--test-fraction", "-0.5"], "argument --test-fraction: must be > 0"),
        (["--cg-steps", "-5"], "argument --cg-steps: must be >= 0"),
        (["--workers", "0"], "argument --workers: must be >= 1"),
        (["--like", "Song 3", "--user", "u1"], "not both"),
    ],
    ids=[
        "unknown-title",
        "close-match",
        "unknown-column",
        "empty-after-filter",
        "factors",
        "test-fraction",
        "negative-test-fraction",
        "negative-cg-steps",
        "no-workers",
        "user-and-like",
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
    assert "usage:" not in done.stderr


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
    for option in ("--data", "--user", "--like", "--user-name", "--predict", "--evaluate"):
        assert option in text
    for parser in (build_parser(), recommend_parser()):
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{action.option_strings or action.dest} has no help text"
        # this formatter shows the default after every option's help text
        assert parser.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    assert "--cg-steps CG_STEPS" in text and "(default: 3)" in text


#: The reference lists: implicit 0.7.3 on the reference pipeline, produced by
#:     data = als.data.load("ml-1m").filter(min_weight=3).add_user(REFERENCE["like"], 5.0)
#:     model = implicit.cpu.als.AlternatingLeastSquares(
#:         factors=100, regularization=0.01, iterations=15, random_state=0)
#:     model.fit(data.user_items)
#:     model.recommend(new_user, data.user_items[new_user], N=20)   # liked films left out
#:     model.similar_items(forrest_gump, N=10)                      # minus the film itself
#: (the notebook's own lists are not in the repository). Between seeds implicit's lists share
#: 17-19 of 20 recommendations and 6-8 of 9 similar films (seeds 0, 1, 2, 42), hence the
#: issue's bounds of 17 and 6.
IMPLICIT_TOP_20 = [
    "Star Wars: Episode VI - Return of the Jedi (1983)",
    "Star Wars: Episode V - The Empire Strikes Back (1980)",
    "Jurassic Park (1993)",
    "Star Wars: Episode I - The Phantom Menace (1999)",
    "Fugitive, The (1993)",
    "Terminator, The (1984)",
    "Silence of the Lambs, The (1991)",
    "Men in Black (1997)",
    "Total Recall (1990)",
    "Braveheart (1995)",
    "Saving Private Ryan (1998)",
    "Back to the Future (1985)",
    "Hunt for Red October, The (1990)",
    "American Beauty (1999)",
    "Groundhog Day (1993)",
    "Raiders of the Lost Ark (1981)",
    "L.A. Confidential (1997)",
    "Toy Story (1995)",
    "Alien (1979)",
    "Aliens (1986)",
]
IMPLICIT_SIMILAR_TO_FORREST_GUMP = [
    "Groundhog Day (1993)",
    "Pretty Woman (1990)",
    "Sleepless in Seattle (1993)",
    "Four Weddings and a Funeral (1994)",
    "Ghost (1990)",
    "As Good As It Gets (1997)",
    "Open Season (1996)",
    "Small Wonders (1996)",
    "Notting Hill (1999)",
]


@pytest.mark.data
def test_without_arguments_runs_the_reference_notebook():
    dataset_path("ml-1m", "ratings.dat.gz")
    done = run("als.train", "--quiet", "--json")
    summary = json.loads(done.stdout)
    # ratings >= 3 (836,478 on 6,039 users and 3,628 films) plus braum with five films
    assert summary["data"]["interactions"] == 836_478 + 5
    assert (summary["data"]["users"], summary["data"]["items"]) == (6_040, 3_628)
    assert summary["training"]["interactions"] == 836_478 + 5  # all of them
    assert summary["parameters"]["factors"] == 100 and summary["parameters"]["iterations"] == 15
    assert summary["user_name"] == "braum" and "evaluation" not in summary
    predicted = [entry["title"] for entry in summary["predictions"]]
    assert predicted == ["Forrest Gump (1994)", "Toy Story (1995)"]
    titles = [entry["title"] for entry in summary["recommendations"]]
    assert len(titles) == 20 and not set(titles) & set(REFERENCE["like"])
    assert len(set(titles) & set(IMPLICIT_TOP_20)) >= 17
    similar = [entry["title"] for entry in summary["similar"]["Forrest Gump (1994)"]]
    assert len(set(similar[:9]) & set(IMPLICIT_SIMILAR_TO_FORREST_GUMP)) >= 6
    because = summary["explanations"]["Forrest Gump (1994)"]["because_of"]
    assert {entry["title"] for entry in because} == set(REFERENCE["like"])
    # the report prints the notebook's answers in its order, under plain headings
    report = done.stderr
    headings = [
        "braum's predicted preference:",
        "most similar to Forrest Gump (1994):",
        "top 20 for braum (liked items left out):",
        "why braum would like Forrest Gump (1994):",
    ]
    assert all(heading in report for heading in headings)
    assert [report.index(heading) for heading in headings] == sorted(
        report.index(heading) for heading in headings
    )


def test_missing_pyarrow_is_one_line_with_the_install_command(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "plays.parquet"
    try:
        pd.DataFrame({"user": [1, 2], "item": [3, 4]}).to_parquet(path)
    except ImportError:
        path.write_bytes(b"PAR1")  # not readable anyway: pyarrow is absent here
    # run the CLI with pyarrow (and fastparquet) made unimportable
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['fastparquet'] = None;"
        "from als.train import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, "--data", str(path), "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "pip install pyarrow" in line
