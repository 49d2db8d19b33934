"""The command lines end to end, as a user runs them: what they load, train, say and save.

Most tests run the commands in subprocesses; the checks that must happen before training
call ``main`` in this process with the fit replaced by a failure. How the commands fail
(one line, exit status 2) is tests/test_cli_errors.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from als import AlternatingLeastSquares, cli_data
from als import train as train_cli
from als.answers import counted
from als.recommend import build_parser as recommend_parser
from als.train import REFERENCE, apply_reference_workflow, build_parser
from als.tune import build_parser as tune_parser
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


def write_plays(folder, user_col, item_col, users, items, per_user):
    """Write a plays table with string ids (``u3``, ``t7``) and random play counts, and a
    titles table (``Song 7``); return both paths."""
    path = folder / "plays.csv"
    rows = [f"{user_col},{item_col},plays"]
    rng = np.random.default_rng(0)
    for user in range(users):
        for item in rng.choice(items, size=per_user, replace=False):
            rows.append(f"u{user},t{item},{rng.integers(1, 20)}")
    path.write_text("\n".join(rows) + "\n")
    titles = folder / "titles.csv"
    titles.write_text(f"{item_col},title\n" + "".join(f"t{i},Song {i}\n" for i in range(items)))
    return path, titles


@pytest.fixture
def table(tmp_path):
    """A small plays table (listener, track, plays) with string ids, and its titles."""
    return write_plays(tmp_path, "listener", "track", users=40, items=30, per_user=8)


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


def test_help_documents_every_option():
    text = run("als.train", "--help").stdout
    for option in ("--data", "--user", "--like", "--user-name", "--predict", "--evaluate"):
        assert option in text
    for parser in (build_parser(), recommend_parser(), tune_parser()):
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{action.option_strings or action.dest} has no help text"
        # this formatter shows the default after every option's help text (where there is one)
        assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    assert "--cg-steps CG_STEPS" in text and "(default: 3)" in text


@pytest.mark.parametrize(
    "module, parser",
    [("als.train", build_parser), ("als.recommend", recommend_parser), ("als.tune", tune_parser)],
)
def test_help_shows_each_default_once_in_plain_text(module, parser):
    text = " ".join(run(module, "--help").stdout.split())
    # one "(default: ...)" per option that has a default value, none for the others
    with_default = [
        action
        for action in parser()._actions
        if action.dest != "help"
        and not (action.default is None or action.default is False or action.default == [])
    ]
    if module == "als.train":  # 0 is a default like any other
        assert "--seed SEED seed for the initial factors (default: 0)" in text
    assert text.count("(default:") == len(with_default)
    for absent in ("(default: None)", "(default: False)", "(default: [])", "default: guessed"):
        assert absent not in text
    assert "``" not in text and ":class:" not in text  # no reStructuredText markup


def test_tune_help_speaks_of_tuning_in_its_own_words():
    text = " ".join(run("als.tune", "--help").stdout.split())
    assert "braum" not in text and "reference workflow" not in text
    for option in ("--max-factors", "--max-iterations", "--backend", "--trials", "--space"):
        assert option in text
    tune_data = next(a for a in tune_parser()._actions if a.dest == "data")
    train_data = next(a for a in build_parser()._actions if a.dest == "data")
    assert "required" in tune_data.help and tune_data.help != train_data.help


def test_weight_column_help_says_it_is_guessed():
    weight = next(a for a in build_parser()._actions if a.dest == "weight_col")
    assert "count" in weight.help and "1 per row when none is" in weight.help


#: the reference workflow's model in implicit's terms
REFERENCE_PARAMS = {"factors": 100, "regularization": 0.01, "iterations": 15, "random_state": 0}

#: How close our answers must be to implicit's. tests/test_agreement.py (and DESIGN.md) bound
#: the difference between our factors and implicit's after 15 iterations on ML-1M-sized data
#: by 1e-2 of the largest factor; a score, a sum of products of such factors, is given the
#: same 1e-2 relative to the largest score (a cosine: to 1). Measured on this workflow: 1.4e-3.
SCORE_TOLERANCE = 1e-2


def implicit_scores(user_items, user, item):
    """implicit 0.7's answers on the reference workflow, fitted here with the same data,
    parameters and seed: the user's score for every item, and every item's cosine with
    ``item`` (what implicit's ``recommend`` and ``similar_items`` rank by)."""
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS
    from threadpoolctl import threadpool_limits

    model = ImplicitALS(**REFERENCE_PARAMS)
    with threadpool_limits(1, "blas"):  # implicit's advice for its own thread pool
        model.fit(user_items, show_progress=False)
    factors = model.item_factors.astype(np.float64)
    scores = factors @ model.user_factors[user].astype(np.float64)
    unit = factors / np.maximum(np.linalg.norm(factors, axis=1, keepdims=True), 1e-12)
    return scores, unit @ unit[item]


def assert_top_by_score(ours, theirs, candidates, n, tolerance):
    """Assert ``ours`` ({column: score}) is a top ``n`` of ``candidates`` under implicit's
    ``theirs`` scores, within ``tolerance``: each score matches implicit's for the same item,
    and none falls below implicit's n-th best by more than the tolerance (ties either way)."""
    columns = np.fromiter(ours, dtype=np.int64)
    np.testing.assert_allclose([ours[c] for c in columns], theirs[columns], atol=tolerance)
    nth_best = np.sort(theirs[candidates])[-n]
    assert theirs[columns].min() >= nth_best - tolerance


def best(scores, candidates, n):
    """The ``n`` best-scoring columns of ``candidates`` (ties broken either way)."""
    return set(candidates[np.argsort(-scores[candidates])[:n]])


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

    # implicit, fitted here on the same data with the same parameters and seed
    from als.data import load

    data = load("ml-1m").filter(min_weight=3).add_user(REFERENCE["like"], 5.0)
    braum, gump = data.n_users - 1, data.resolve_item("Forrest Gump (1994)")
    scores, cosines = implicit_scores(data.user_items, braum, gump)
    predicted = [data.item_index(entry["item"]) for entry in summary["predictions"]]
    np.testing.assert_allclose(
        [entry["score"] for entry in summary["predictions"]],
        scores[predicted],
        atol=SCORE_TOLERANCE * np.abs(scores).max(),
    )
    unliked = np.setdiff1d(np.arange(data.n_items), data.user_items[braum].indices)
    ours = {data.item_index(e["item"]): e["score"] for e in summary["recommendations"]}
    assert_top_by_score(ours, scores, unliked, 20, SCORE_TOLERANCE * scores[unliked].max())
    # and the lists are nearly the same (implicit's own lists share 17-19 of 20 across seeds)
    assert len(set(ours) & best(scores, unliked, 20)) >= 17
    similar = summary["similar"]["Forrest Gump (1994)"]
    ours = {data.item_index(e["item"]): e["score"] for e in similar}
    others = np.setdiff1d(np.arange(data.n_items), [gump])
    assert_top_by_score(ours, cosines, others, 10, SCORE_TOLERANCE)
    # (implicit's own lists share 6-8 of their first 9 similar films across seeds)
    assert len(set(list(ours)[:9]) & best(cosines, others, 9)) >= 6


# -- the command line checks before it trains -------------------------------------------------


def table_argv(path, *more):
    """``als.train`` arguments for the ``table`` fixture: tiny model, numpy backend."""
    return ["--data", str(path), "--user-col", "listener", "--item-col", "track", "--factors",
            "2", "--iterations", "1", "--quiet", "--backend", "numpy", *more]  # fmt: skip


@pytest.fixture
def no_fit(monkeypatch):
    """Every fit fails the test: what runs with this fixture must stop before training."""

    def fit(*args, **kwargs):
        raise AssertionError("the model was fitted")

    monkeypatch.setattr(AlternatingLeastSquares, "fit", fit)


@pytest.mark.parametrize("flag", ["--predict", "--similar", "--explain", "--like", "--user"])
def test_every_title_and_the_user_are_checked_before_training(table, capsys, no_fit, flag):
    path, titles = table
    value = "u999" if flag == "--user" else "Song 99"
    status = train_cli.main(table_argv(path, "--titles", str(titles), flag, value))
    out, err = capsys.readouterr()
    assert status == 2 and "training on" not in out
    assert err.startswith("error: ") and value in err and "was fitted" not in err


def test_columns_are_checked_from_the_header_before_the_table_is_read(table, capsys, monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the table was read")

    monkeypatch.setattr(cli_data, "load", load)
    path, _ = table
    for flag in ("--user-col", "--item-col", "--weight-col"):
        assert train_cli.main(table_argv(path, flag, "nope")) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}: ") and "'nope'" in err, err
        assert "its columns are listener, track, plays" in err
    # no flag names the user column and none is named like one: the flag to give is named
    assert train_cli.main(["--data", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no user column" in err and "--user-col" in err and "user_col=" not in err


def test_the_report_says_which_columns_were_used_and_which_were_guessed(tmp_path, capsys):
    path = tmp_path / "plays.csv"
    rows = [f"u{u},s{(7 * u + i) % 13},{i + 1}" for u in range(20) for i in range(4)]
    path.write_text("user,song,count\n" + "\n".join(rows) + "\n")
    argv = ["--data", str(path), "--item-col", "song", "--factors", "2", "--iterations", "1",
            "--quiet", "--backend", "numpy", "--json"]  # fmt: skip
    assert train_cli.main(argv) == 0
    out, report = capsys.readouterr()
    summary = json.loads(out)
    assert (
        "  - columns: user 'user' (guessed; --user-col names another), item 'song', "
        "weight 'count' (guessed; --weight-col names another)\n" in report
    )
    assert summary["data"]["columns"] == {
        "user": "user",
        "item": "song",
        "weight": "count",
        "guessed": ["user", "weight"],
    }
    assert not any("every row weighs 1" in step for step in summary["data"]["history"])
    # every column named: nothing guessed
    assert train_cli.main([*argv, "--user-col", "user", "--weight-col", "count"]) == 0
    report = capsys.readouterr().err
    assert "columns: user 'user', item 'song', weight 'count'\n" in report
    # no column named like a weight: 1 per row, and the report says so
    path.write_text("user,song\n" + "\n".join(row.rsplit(",", 1)[0] for row in rows) + "\n")
    assert train_cli.main(argv) == 0
    assert "no weight column (every row weighs 1)" in capsys.readouterr().err


def test_the_explanation_says_why_its_score_differs_from_the_prediction(trained_100k):
    _, summary, report = trained_100k
    top = summary["recommendations"][0]
    explanation = summary["explanations"][top["title"]]
    # the trained factors' score is the one the recommendations rank by (float64 dot product
    # here, float32 there)
    assert explanation["trained_score"] == pytest.approx(top["score"], rel=1e-5, abs=1e-6)
    block = report[report.index(f"why braum would like {top['title']}:") :]
    assert f"score {explanation['score']:.4f}, from braum's factors solved exactly" in block
    assert f"(the trained factors predict {explanation['trained_score']:.4f})" in block


def test_counts_agree_with_their_nouns(table, capsys):
    assert counted(1, "film") == "1 film" and counted(5, "film") == "5 films"
    assert counted(1_000, "entry", "entries") == "1,000 entries"
    said = []
    apply_reference_workflow(build_parser().parse_args(["--like", "Heat (1995)"]), said.append)
    assert said == ["no --data: the reference workflow on ml-1m, ratings >= 3, a new user "
                    "'braum' who likes 1 film"]  # fmt: skip
    path, _ = table
    assert train_cli.main(table_argv(path)) == 0
    assert "\n1 iteration, " in capsys.readouterr().out


def test_workers_read_the_columns_and_titles_the_client_would(table, capsys):
    """With --scheduler the workers read the table: the same columns (the weight column found
    by name, as on the client) and the --titles, checked before the fit."""
    distributed = pytest.importorskip("distributed")
    path, titles = table
    argv = ["--data", str(path), "--user-col", "listener", "--item-col", "track",
            "--titles", str(titles), "--factors", "2", "--iterations", "1", "--threads", "1",
            "--quiet", "--backend", "numpy", "--json", "--user", "u1"]  # fmt: skip
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        scheduler = ["--scheduler", cluster.scheduler_address]
        assert train_cli.main([*argv, *scheduler, "--predict", "Song 3"]) == 0
        out, report = capsys.readouterr()
        assert train_cli.main([*argv, *scheduler, "--predict", "Song 99"]) == 2
        refused = capsys.readouterr()
    summary = json.loads(out)
    assert "read on the workers" in report
    assert "columns: user 'listener', item 'track', weight 'plays' (guessed" in report
    assert summary["data"]["columns"]["weight"] == "plays"
    assert [entry["title"] for entry in summary["predictions"]] == ["Song 3"]
    assert "Song 99" in refused.err and "training on" not in refused.err
