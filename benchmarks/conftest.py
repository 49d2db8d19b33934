"""The pytest-benchmark suites: how ``bench_*.py`` is collected, their data and correctness gates.

Run them with ``pytest benchmarks/ --benchmark-only``. The project's own ``pytest`` never
loads this folder (``testpaths = ["tests"]``), and nothing here is named ``test_*.py``: the
hook below collects ``bench_*.py`` only when pytest is pointed at ``benchmarks/``.

Which data sets, engines and factors run is set by environment variables: see
``benchmarks/suite.py``.
"""

from __future__ import annotations

import pytest

from benchmarks.common import (
    DatasetMissing,
    agreement_error,
    engine_context,
    engine_unavailable,
    load_dataset,
    make_model,
)
from benchmarks.suite import (
    BENCH_ENGINES,
    DATASETS,
    FACTORS,
    QUERY_MODEL_ITERATIONS,
)


def pytest_collect_file(file_path, parent):
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session", params=DATASETS)
def dataset(request):
    """Name of a data set; absent real ones are skipped with the reason."""
    return request.param


_matrices = {}


@pytest.fixture(scope="session")
def user_items(dataset):
    """The users x items CSR of ``dataset`` (one held at a time: the large ones are big)."""
    if dataset not in _matrices:
        _matrices.clear()
        try:
            _matrices[dataset] = load_dataset(dataset)
        except DatasetMissing as exc:
            pytest.skip(str(exc))
    return _matrices[dataset]


@pytest.fixture(params=FACTORS, ids=lambda f: f"f{f}")
def factors(request):
    return request.param


_agreement = {}


@pytest.fixture(params=BENCH_ENGINES)
def engine(request):
    """An engine that runs here and gives implicit's answers; others skip or fail first."""
    name = request.param
    reason = engine_unavailable(name)
    if reason:
        pytest.skip(f"{name} cannot run here: {reason}")
    if name.startswith("als-"):
        if name not in _agreement:
            _agreement[name] = agreement_error(name)
        if _agreement[name]:
            pytest.fail(f"not timed, wrong answers: {_agreement[name]}")
    return name


_trained = {}


@pytest.fixture
def trained_model(engine, dataset, user_items, factors):
    """A model of ``engine`` fitted for a few iterations, shared by the query benchmarks."""
    key = (engine, dataset, factors)
    if key not in _trained:
        _trained.clear()
        with engine_context(engine):  # implicit checks the BLAS limit when constructed
            model = make_model(engine, factors, QUERY_MODEL_ITERATIONS)
            model.fit(user_items, show_progress=False)
        _trained[key] = model
    return _trained[key]
