"""The examples in docstrings and in README.md run and say what they claim."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["als.model", "als.evaluation", "als.data", "als.validation", "als.persistence"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0


def test_readme_python_tutorial_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)  # it saves a model file
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "DataFrame: 5 interactions, 3 users, 3 items" in printed
    assert "['let it be']" in printed  # the one song ann has not played
    assert (tmp_path / "model.npz").exists()
