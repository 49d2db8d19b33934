"""``python -m als.tune`` and ``python -m als.train --params`` on a small generated table."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("optuna", reason="als.tune needs Optuna (the tune extra)")

from als import train as train_cli  # noqa: E402
from als import tune as tune_cli  # noqa: E402
from als.errors import InvalidValueError  # noqa: E402
from als.train_run import PARAMS, read_params  # noqa: E402
from tests.conftest import power_law_matrix  # noqa: E402

IMPLICIT_KEYS = {"factors", "iterations", "alpha", "regularization"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A user,item,weight CSV of a 200 x 120 power-law matrix."""
    coo = power_law_matrix(200, 120, 3000, seed=4).tocoo()
    path = tmp_path_factory.mktemp("tune") / "plays.csv"
    lines = ["user,item,weight"] + [
        f"u{u},i{i},{w:g}" for u, i, w in zip(coo.row, coo.col, coo.data, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def data_flags(table):
    return ["--data", str(table), "--user-col", "user", "--item-col", "item",
            "--weight-col", "weight"]  # fmt: skip


@pytest.mark.parametrize("space", ["als", "implicit"])
def test_tune_searches_its_space_and_returns_model_arguments(space):
    train = power_law_matrix(150, 90, 2000, seed=2)
    result = tune_cli.tune(
        train, space=space, trials=3, seed=1, max_factors=32, max_iterations=3,
        backend="cpu", show_progress=False,
    )  # fmt: skip
    assert len(result.trials) == 3
    assert all(0 <= t["value"] <= 1 for t in result.trials)
    assert result.best_value == max(t["value"] for t in result.trials)
    for trial in result.trials:
        keys = set(trial["params"])
        if space == "implicit":
            assert keys == IMPLICIT_KEYS
        else:
            assert {"confidence", "alpha0", "nu", "init_stddev"} <= keys
            assert trial["params"]["factors"] <= 32


def test_cli_json_shape_and_the_printed_command_reproduces_the_test_metrics(
    table, capsys, tmp_path
):
    search = ["--trials", "2", "--max-factors", "32", "--max-iterations", "3"]
    argv = data_flags(table) + search + ["--backend", "cpu", "--json", "--quiet", "--seed", "3"]
    assert tune_cli.main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    best = summary["best"]
    assert set(best["metrics"]) >= {"precision", "map", "ndcg", "auc", "k"}
    assert len(summary["trials"]) == 2
    assert best["params"] in [t["params"] for t in summary["trials"]]
    assert set(best["params"]) <= PARAMS
    assert "reproduce with" in captured.err and "--params" in summary["command"]
    # the columns were named: the report says so, and guessed none
    assert "columns: user 'user', item 'item', weight 'weight'\n" in captured.err

    (tmp_path / "best.json").write_text(captured.out)
    # the same split (seed, fraction) and settings as the tuner's refit
    argv = data_flags(table) + ["--params", str(tmp_path / "best.json"), "--seed", "3",
                                "--backend", "cpu", "--json", "--quiet", "--evaluate"]  # fmt: skip
    assert "--evaluate" in summary["command"]
    assert train_cli.main(argv) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["training"]["factors"] == best["params"]["factors"]
    # --evaluate's second fit is the tuner's refit: the same split and settings
    assert trained["evaluation"]["training"]["factors"] == best["params"]["factors"]
    # the same fit on the same machine; a tolerance all the same, for BLAS thread variance
    assert trained["evaluation"]["ndcg"] == pytest.approx(best["metrics"]["ndcg"], abs=1e-6)


def test_params_must_be_model_arguments(tmp_path):
    assert read_params('{"factors": 8, "nu": 1.0}') == {"factors": 8, "nu": 1.0}
    with pytest.raises(InvalidValueError, match="does not take: colour"):
        read_params('{"colour": 1}')
    with pytest.raises(InvalidValueError, match="cannot read"):
        read_params(str(tmp_path / "missing.json"))
    nested = {"best": {"params": {"alpha": 2.0}, "metrics": {}}, "trials": []}
    assert read_params(json.dumps(nested)) == {"alpha": 2.0}


def test_tune_refuses_a_zero_test_fraction(table, capsys):
    argv = data_flags(table) + ["--trials", "1", "--test-fraction", "0"]
    assert tune_cli.main(argv) == 2
    assert "test-fraction" in capsys.readouterr().err


def test_the_validation_split_comes_from_the_training_part_only():
    train = power_law_matrix(100, 60, 1200, seed=6)
    seen = []
    original = tune_cli.ranking_metrics_at_k

    def spy(model, fit_part, validation, **kwargs):
        seen.append((fit_part, validation))
        return original(model, fit_part, validation, **kwargs)

    tune_cli.ranking_metrics_at_k = spy
    try:
        tune_cli.tune(train, "implicit", trials=1, max_factors=32, max_iterations=2,
                      backend="cpu", show_progress=False)  # fmt: skip
    finally:
        tune_cli.ranking_metrics_at_k = original
    fit_part, validation = seen[0]
    # together they are exactly the training part, with no entry in both
    np.testing.assert_array_equal((fit_part + validation).toarray(), train.toarray())
    assert fit_part.multiply(validation).nnz == 0


def test_search_settings_are_checked_before_any_trial():
    train = power_law_matrix(50, 30, 300, seed=1)
    with pytest.raises(InvalidValueError, match="validation_fraction"):
        tune_cli.tune(train, validation_fraction=1.0, show_progress=False)
    with pytest.raises(InvalidValueError, match="space"):
        tune_cli.tune(train, "lightfm", show_progress=False)
    with pytest.raises(TypeError, match="colour"):
        tune_cli.tune(train, colour="red", show_progress=False)


def test_cli_refuses_bad_search_options_in_one_line(table, capsys):
    for flag, value in (("--trials", "0"), ("--max-factors", "0"), ("--minutes", "-1")):
        assert tune_cli.main(data_flags(table) + [flag, value]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: argument {flag}: must be")
    assert tune_cli.main(["--trials", "1"]) == 2
    assert "--data is required" in capsys.readouterr().err
