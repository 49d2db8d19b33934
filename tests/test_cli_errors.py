"""The command lines never show a traceback: every failure is one line on stderr, exit 2.

Most cases call the CLIs' ``main`` in this process (the wrapper under test is the same code
``python -m`` runs); some run the commands in subprocesses to check the real exit status.
Data are tiny generated tables, models a few factors and one iteration. The messages speak
of flags (``--user-col``), not of the library's Python arguments (``user_col=``).
"""

from __future__ import annotations

import csv
import errno
import gzip
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from als import AlternatingLeastSquares
from als import recommend as recommend_cli
from als import train as train_cli
from als.cli_errors import flag_advice
from als.data import read_table
from tests.test_cli import ROOT, run, write_plays


@pytest.fixture
def plays(tmp_path):
    """A 30-user plays table (user, item, plays) with string ids, and its titles."""
    return write_plays(tmp_path, "user", "item", users=30, items=20, per_user=6)


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
    """Write the model file at ``path`` again, with ``changes`` to its arrays."""
    with np.load(path) as stored:
        arrays = {**stored, **changes}
    np.savez(path, **arrays)


def test_divergent_fit_is_one_line(plays, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line, _ = one_line_failure(capsys, train_cli.main, train_args(plays[0], "--alpha", "1e30"))
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
def test_user_mistakes_give_one_line_and_exit_2(plays, args, message):
    path, titles = plays
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
        base += ["--user-col", "user"]
    done = run(*base, "--item-col", "item", "--weight-col", "plays", *args, check_exit=2)
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


# -- messages in the command line's terms; a closed pipe ---------------------------------------


def test_flag_advice_rewrites_python_arguments_as_flags():
    assert flag_advice("no user column; name it with user_col=.") == (
        "no user column; name it with --user-col."
    )
    assert flag_advice("no GPU; load(..., backend='cpu') loads this model on the CPU") == (
        "no GPU; --backend cpu loads this model on the CPU"
    )
    assert flag_advice("load(): encoding does not apply to ml-1m.") == (
        "--encoding does not apply to ml-1m."
    )
    assert flag_advice("dtype=float16 is not supported") == "--dtype float16 is not supported"
    assert flag_advice("factors must be >= 1, got 0") == "factors must be >= 1, got 0"


def test_errors_name_flags_not_python_arguments(tmp_path, capsys):
    path = tmp_path / "plays.csv"
    path.write_text("who,item,plays\nann,a,1\nbob,b,2\n")
    line, _ = one_line_failure(capsys, train_cli.main, ["--data", str(path), "--quiet"])
    assert "no user column" in line and "name it with --user-col" in line
    assert "user_col" not in line
    line, _ = one_line_failure(
        capsys, train_cli.main, ["--data", "ml-100k", "--sep", ";", "--encoding", "latin-1"]
    )
    assert line == "error: --encoding, --sep do not apply to ml-100k."
    line, _ = one_line_failure(
        capsys,
        train_cli.main,
        ["--data", str(path), "--user-col", "who", "--dtype", "float16", "--backend", "cpu"],
    )
    assert "--dtype float16" in line and "dtype=" not in line


def test_the_encoding_the_error_suggests_is_a_flag_that_works(tmp_path, capsys):
    path = tmp_path / "plays.csv"
    path.write_bytes("user,item,plays\nzoé,a,1\nzoé,b,2\nann,a,3\n".encode("latin-1"))
    argv = ["--data", str(path), "--factors", "2", "--iterations", "1", "--quiet",
            "--backend", "numpy"]  # fmt: skip
    line, _ = one_line_failure(capsys, train_cli.main, argv)
    assert "e.g. --encoding iso-8859-1" in line and "encoding=" not in line
    assert train_cli.main([*argv, "--encoding", "iso-8859-1", "--user", "zoé"]) == 0
    assert "top 20 for user zoé" in capsys.readouterr().out


def test_a_model_that_cannot_load_on_the_gpu_names_the_flag(saved, capsys):
    from als.backends.base import BackendUnavailable, get_backend

    try:
        get_backend("cuda")
    except BackendUnavailable:
        pass
    else:
        pytest.skip("a GPU is usable here: the model loads on it")
    line, _ = one_line_failure(
        capsys, recommend_cli.main, [str(saved), "--user", "u1", "--backend", "cuda"]
    )
    assert "--backend cpu loads this model on the CPU" in line and "load(" not in line


def test_a_closed_pipe_ends_the_command_quietly(plays):
    """``python -m als.train | head`` where head has gone: no message, SIGPIPE's status."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "als.train", *train_args(plays[0])]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # the reader is gone before the first line is written
    error = process.stderr.read()
    process.stderr.close()
    assert process.wait(timeout=300) in (0, 141)
    assert error == b""
