"""Shared fixtures: the backend matrix every behaviour test runs against, and test data."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from als.backends.base import BackendUnavailable, get_backend

BACKEND_NAMES = ["numpy", "cpu", "cuda"]

#: where the shared data sets live; CI sets ALS_DATA_DIR to ../shared/data
DATA_DIR = Path(
    os.environ.get("ALS_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _backend_or_skip(name):
    try:
        return get_backend(name)
    except BackendUnavailable as exc:
        pytest.skip(f"backend {name!r} cannot run here: {exc}")


@pytest.fixture(params=BACKEND_NAMES)
def backend_name(request):
    """Name of every backend; those that cannot run here are skipped with the reason."""
    _backend_or_skip(request.param)
    return request.param


@pytest.fixture(autouse=True)
def _quiet_implicit_blas_warning():
    # implicit warns once per process that OpenBLAS uses a thread pool; it is not our concern
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*BLAS.*threads.*", category=RuntimeWarning)
        yield


def power_law_matrix(n_users, n_items, nnz, seed=0, dtype=np.float32, negative_fraction=0.0):
    """A users x items CSR matrix with Zipf-like user activity and item popularity.

    Weights are integer "ratings" 1..5; a ``negative_fraction`` of them are made negative
    (disliked). Duplicates are removed, so the result has at most ``nnz`` entries.
    """
    rng = np.random.default_rng(seed)
    user_weight = 1.0 / np.arange(1, n_users + 1) ** 0.8
    item_weight = 1.0 / np.arange(1, n_items + 1) ** 0.9
    users = rng.choice(n_users, size=nnz, p=user_weight / user_weight.sum())
    items = rng.choice(n_items, size=nnz, p=item_weight / item_weight.sum())
    # shuffle ids so heavy rows are not all at the top
    users = rng.permutation(n_users)[users]
    items = rng.permutation(n_items)[items]
    keys = np.unique(users.astype(np.int64) * n_items + items)
    weights = rng.integers(1, 6, size=len(keys)).astype(dtype)
    if negative_fraction:
        weights[rng.random(len(keys)) < negative_fraction] *= -1
    return scipy.sparse.csr_matrix(
        (weights, (keys // n_items, keys % n_items)), shape=(n_users, n_items)
    )


@pytest.fixture(scope="session")
def small_matrix():
    """300 users x 200 items, ~5,000 ratings, a few disliked, one empty user and item."""
    matrix = power_law_matrix(300, 200, 6000, seed=1, negative_fraction=0.05).tolil()
    matrix[7, :] = 0
    matrix[:, 11] = 0
    return matrix.tocsr().astype(np.float32)


@pytest.fixture(scope="session")
def medium_matrix():
    """2,000 users x 1,000 items, ~60,000 ratings: big enough for power-law behaviour."""
    return power_law_matrix(2000, 1000, 80_000, seed=2)


def dataset_path(*parts):
    """Path of a file in the shared data folder, or skip the test saying what is missing."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"data file {path} is absent (set ALS_DATA_DIR to the shared data folder)")
    return path
