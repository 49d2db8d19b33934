"""The examples in docstrings and in README.md run and say what they claim; the pages link to
files that exist; the repository's text speaks of the product only."""

from __future__ import annotations

import doctest
import importlib
import os
import re
import subprocess
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


def ci_command():
    """The one command .ci/run runs: set up a fresh environment and run the tests."""
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return next(line for line in lines if line.startswith("python3 -m venv"))


def indented_commands(text):
    """The commands a page shows as indented code lines."""
    return [line.strip() for line in text.splitlines() if line.startswith("    ")]


def test_readme_gives_the_two_commands():
    commands = indented_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    tests = ci_command()
    assert tests in commands  # CI runs exactly what the README tells a newcomer to run
    set_up, _, run_tests = tests.rpartition(" .venv/bin/python ")
    assert run_tests == "-m pytest -q"
    assert f"{set_up} .venv/bin/python -m als.train" in commands


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200


def pages():
    """Every Markdown page a reader reaches from the front page."""
    return [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]


def local_links(page):
    """Targets of the page's Markdown links and images that point inside the repository."""
    targets = re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8"))
    return [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_point_at_files_that_exist(page):
    missing = [t for t in local_links(page) if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t).resolve() for t in local_links(ROOT / "README.md")}
    assert set((ROOT / "docs").glob("*.md")) - {ROOT / "docs" / "index.md"} <= linked


#: phrases about how the product was made rather than what it is: issue numbers, numbered
#: sessions and development rounds, earlier versions of the code, the people and machines
#: behind it. Ordinary English passes: pytest's ``scope="session"``, "rounds" of a sampler
#: or a timing loop, arrays "shared with other objects".
PROCESS_TALK = re.compile(
    r"\bissues?\s+#?\d+|\bissue's|\bsessions?\s+\d+|"
    r"\b(this|previous|earlier|later|next|last) session\b|"
    r"\bprevious (session|round|version|code|kernels?)\b|\bround\s+\d+|"
    r"\brounds? of (work|development|review)|-s\d-|\bengineers?\b|\bhand-?off\b|"
    r"\bbusy with other|\bshared with other (jobs|users|tenants)|\bshares with its neighbours",
    re.IGNORECASE,
)

#: the text files a reader of the repository meets
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".json", ".txt", ".cu", ".cuh"}


def repository_files():
    """The repository's files: git's tracked files in a checkout, else the tree without
    hidden folders (``.git``, ``.venv``), caches and build output."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, text=True
        ).stdout
        return [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        pass
    skip = {"__pycache__", "build", "dist"}
    files = []
    for folder, folders, names in os.walk(ROOT):
        folders[:] = [f for f in folders if not f.startswith(".") and f not in skip]
        files += [Path(folder) / name for name in names]
    return files


def is_data(path):
    """A data set under data/ (only its README is text of the repository)."""
    relative = path.relative_to(ROOT)
    return relative.parts[0] == "data" and relative.name != "README.md"


def text_files():
    """Every text file of the repository, data sets left out."""
    return sorted(
        path
        for path in repository_files()
        if path.suffix in TEXT_SUFFIXES and path.is_file() and not is_data(path)
    )


@pytest.mark.parametrize("path", text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_speak_of_the_product_only(path):
    text = path.read_text(encoding="utf-8")
    found = [
        f"line {text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r}"
        for m in PROCESS_TALK.finditer(text)
    ]
    assert not found, f"{path.relative_to(ROOT)} talks about how it was made: {found}"
