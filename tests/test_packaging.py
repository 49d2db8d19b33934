"""The wheel: what it contains, and that an installed (not editable) copy finds its data."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, dataset_path

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_builds_spdx_licenses():
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version

    return int(version("setuptools").split(".")[0]) >= 77


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the sources (the build leaves build/ behind)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for package in ("als", "backends"):
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), "."]
    if _setuptools_builds_spdx_licenses():
        # no download needed: build with this environment's setuptools
        command.insert(4, "--no-build-isolation")
    done = subprocess.run(command, cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("als_recommender-*.whl")
    return path


def test_wheel_installs_one_top_level_package_of_its_own(wheel):
    """``backends/`` of the repository is installed as ``als.backends``, not beside ``als``."""
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"als"}
    sources = {
        f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, installed in (("als", "als"), ("backends", "als/backends"))
        for path in (ROOT / folder).rglob("*.py")
    }
    # every module of the checkout is installed (a sub-package missing from pyproject's list
    # would be left out silently)
    assert sources <= set(names), sorted(sources - set(names))


def test_wheel_holds_the_registry_the_kernels_and_the_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "als/registry.json" in names
    kernels = {
        "als/" + path.relative_to(ROOT).as_posix()
        for pattern in ("*.cu", "*.cuh")
        for path in (ROOT / "backends" / "kernels").glob(pattern)
    }
    assert {"als/backends/kernels/topk.cu", "als/backends/kernels/common.cuh"} <= kernels
    assert kernels <= names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert "Name: als-recommender" in metadata
    assert "Author: The als developers" in metadata
    assert "Keywords: " in metadata and "Classifier: " in metadata
    assert not any(n.startswith(("tests/", "data/", "benchmarks/")) for n in names)


def test_installed_copy_reads_its_registry_and_finds_data(wheel, tmp_path):
    dataset_path("ml-100k", "u.data")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what installing a pure-Python wheel does
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "ALS_DATA_DIR": str(DATA_DIR.resolve())}
    script = (
        "import als, als.datasets as d, json, als.backends.cupy_cuda as c;"
        "assert len(c.kernel_source()) > 1000;"
        "print(als.__file__); print(d.PROJECT_DATA_DIR);"
        "print(json.loads(d.REGISTRY_PATH.read_text(encoding='utf-8'))['datasets']['ml-1m']['url'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    where, project_data, url = done.stdout.split("\n")[:3]
    assert Path(where).is_relative_to(site)
    assert "Traceback" not in done.stderr
    assert project_data == "None"  # site-packages/data is not searched
    assert url.startswith("https://files.grouplens.org/")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "als.train",
            "--data",
            "ml-100k",
            "--like",
            "Star Wars",
            "--factors",
            "4",
            "--iterations",
            "1",
            "--backend",
            "numpy",
            "--quiet",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "ml-100k: 100,001 ratings" in done.stdout and "top 20 for braum" in done.stdout
