"""The command lines never show a traceback: every failure is one line on stderr, exit 2.

Most cases call the CLIs' ``main`` in this process (the wrapper under test is the same code
``python -m`` runs); one test runs both commands in subprocesses to check the real exit
status. Data are tiny generated tables, models a few factors and one iteration.
"""

from __future__ import annotations

import csv
import errno
import gzip
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from als import AlternatingLeastSquares
from als import recommend as recommend_cli
from als import train as train_cli
from als.data import read_table

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def plays(tmp_path):
    """A 30-user plays table with string ids, and its titles."""
    path = tmp_path / "plays.csv"
    rng = np.random.default_rng(0)
    rows = ["user,item,plays"]
    for user in range(30):
        for item in rng.choice(20, size=6, replace=False):
            rows.append(f"u{user},t{item},{rng.integers(1, 20)}")
    path.write_text("\n".join(rows) + "\n")
    titles = tmp_path / "titles.csv"
    titles.write_text("item,title\n" + "".join(f"t{i},Song {i}\n" for i in range(20)))
    return path, titles


def train_args(path, *more):
    return [
        "--data", str(path), "--user-col", "user", "--item-col", "item",
        "--weight-col", "plays", "--factors", "2", "--iterations", "1", "--quiet",
        "--backend", "numpy", *more,
    ]  # fmt: skip


def one_line_failure(capsys, main, argv):
    """Run ``main(argv)``; assert exit 2 and one ``error:`` line on stderr; return it and stdout."""
    status = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0], out


@pytest.fixture
def saved(plays, tmp_path):
    """A model saved with its id maps, as ``als.train --save`` writes it."""
    path, titles = plays
    from als.readers import read_titles_table

    data = read_table(path, weight_col="plays", titles=read_titles_table(titles))
    model = AlternatingLeastSquares(factors=3, iterations=2, random_state=0, backend="cpu")
    model.fit(data.user_items, show_progress=False)
    target = tmp_path / "model.npz"
    model.save(target, extra=data.to_arrays())
    return target


def rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def test_divergent_fit_is_one_line(plays, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line, _ = one_line_failure(
            capsys, train_cli.main, train_args(plays[0], "--alpha", "1e30")
        )
    assert "NaN or infinite" in line
    # NumPy's overflow warnings would be more lines on stderr; the guard's message says it
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_truncated_gzip_is_one_line(plays, tmp_path, capsys):
    damaged = tmp_path / "plays.csv.gz"
    damaged.write_bytes(gzip.compress(plays[0].read_bytes())[:-20])
    line, _ = one_line_failure(capsys, train_cli.main, train_args(damaged))
    assert "plays.csv.gz" in line and "gzip" in line
    not_gzip = tmp_path / "bad.csv.gz"
    not_gzip.write_bytes(b"\x1f\x8b" + bytes(40))
    line, _ = one_line_failure(capsys, train_cli.main, train_args(not_gzip))
    assert "bad.csv.gz" in line


def test_csv_module_errors_are_one_line(tmp_path, capsys):
    # a field over the csv module's limit on a line the fast parser sends to the line scan
    path = tmp_path / "wide.csv"
    path.write_text("user,item,plays\n1,2,3\n1," + "x" * 200_000 + ",lots\n")
    line, _ = one_line_failure(capsys, train_cli.main, train_args(path))
    assert "line 3" in line


@pytest.mark.parametrize(
    "where", ["directory", "folder-name", "missing-folder", "under-a-file", "fifo"]
)
def test_save_path_is_checked_before_training(plays, tmp_path, capsys, where):
    target = {
        "directory": tmp_path / "models.npz",
        "folder-name": tmp_path / "models",
        "missing-folder": tmp_path / "no" / "such" / "model.npz",
        "under-a-file": plays[0] / "model.npz",
        "fifo": tmp_path / "pipe.npz",
    }[where]
    if where in ("directory", "folder-name"):
        target.mkdir()
    if where == "fifo":
        os.mkfifo(target)
    given = str(target) + (os.sep if where == "folder-name" else "")
    line, out = one_line_failure(capsys, train_cli.main, train_args(plays[0], "--save", given))
    assert "training on" not in out  # refused before any work
    assert str(target.parent.name) in line or str(target.name) in line


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_save_folder_is_checked_before_training(plays, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    line, out = one_line_failure(
        capsys, train_cli.main, train_args(plays[0], "--save", str(folder / "m.npz"))
    )
    assert "permission" in line.lower() and "training on" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["-N", "many"], "expected an integer, got 'many'"),
        (["--backend", "tpu"], "invalid choice"),
    ],
    ids=["unknown-option", "bad-int", "bad-choice"],
)
def test_bad_options_are_one_line(plays, capsys, argv, message):
    line, _ = one_line_failure(capsys, train_cli.main, train_args(plays[0], *argv))
    assert message in line
    line, _ = one_line_failure(capsys, recommend_cli.main, ["model.npz", *argv])
    assert message in line


def test_huge_like_weight_is_refused_not_nan(saved, capsys):
    line, out = one_line_failure(
        capsys, recommend_cli.main, [str(saved), "--like", "Song 3", "--like-weight", "1e30"]
    )
    assert "NaN or infinite" in line and "nan" not in out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dtype": np.array("int8")}, "dtype"),
        ({"regularization": np.array(np.nan)}, "regularization"),
        ({"alpha": np.array(-1.0)}, "alpha"),
        ({"extra/data_indices": np.array([10**6], np.int64)}, "corrupted"),
    ],
    ids=["int8-dtype", "nan-regularization", "negative-alpha", "id-map-out-of-range"],
)
def test_corrupted_model_files_are_one_line(saved, capsys, change, message):
    if "extra/data_indices" in change:
        with np.load(saved) as data:
            indices = data["extra/data_indices"].copy()
        indices[0] = 10**6
        change = {"extra/data_indices": indices}
    rewrite(saved, **change)
    line, _ = one_line_failure(capsys, recommend_cli.main, [str(saved), "--user", "u1"])
    assert message in line


def test_the_commands_exit_2_with_one_line(saved, plays, tmp_path):
    """The real ``python -m`` entry points: exit status and stderr, without any traceback
    (nor a progress bar or NumPy's overflow warnings around the error)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rewrite(saved, dtype=np.array("int8"))
    diverging = train_args(plays[0], "--alpha", "1e30")
    diverging.remove("--quiet")
    for argv in (
        ["als.recommend", str(saved), "--user", "u1"],
        ["als.train", "--data", str(tmp_path / "absent.csv"), "--bogus"],
        ["als.train", *diverging],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *argv], env=env, capture_output=True, text=True, timeout=300
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr


def _typing_error():
    from numba.core.errors import TypingError

    return TypingError("Failed in nopython mode pipeline\nNo implementation of function\n...")


@pytest.mark.parametrize(
    "make",
    [
        lambda: OSError(errno.ENOSPC, "No space left on device", "model.npz"),
        lambda: PermissionError(errno.EACCES, "Permission denied", "/data/plays.csv"),
        lambda: IsADirectoryError(errno.EISDIR, "Is a directory", "models"),
        lambda: EOFError("Compressed file ended before the end-of-stream marker was reached"),
        lambda: gzip.BadGzipFile("Not a gzipped file (b'PK')"),
        lambda: csv.Error("field larger than field limit (131072)"),
        lambda: IndexError("index 1682 is out of bounds for axis 0 with size 1682"),
        lambda: MemoryError("Unable to allocate 3.7 TiB"),
        _typing_error,
        lambda: RuntimeError("something nobody expected\nwith a second line"),
    ],
    ids=[
        "ENOSPC", "PermissionError", "IsADirectoryError", "EOFError", "BadGzipFile",
        "csv.Error", "IndexError", "MemoryError", "TypingError", "unexpected",
    ],
)  # fmt: skip
def test_every_failure_during_a_run_is_one_line(plays, capsys, monkeypatch, make):
    def fail(*args, **kwargs):
        raise make()

    monkeypatch.setattr(AlternatingLeastSquares, "fit", fail)
    line, _ = one_line_failure(capsys, train_cli.main, train_args(plays[0]))
    assert "Traceback" not in line and len(line) > len("error: ")
