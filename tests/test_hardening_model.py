"""Robustness of the model as it is served: no non-finite answer, files never trusted, saves
with ordinary permissions, queries safe from many threads, sizes checked.

Matrices are small and built here; the few cases that could hang or crash an unprotected
build (a FIFO, /dev/zero, an index beyond int32) run in a child process with a time limit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import signal
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_info

from als import AlternatingLeastSquares, ModelFileError, ModelFitError
from tests.conftest import power_law_matrix

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def user_items():
    return power_law_matrix(120, 80, 1500, seed=5)


def fit(user_items, backend="cpu", **params):
    options = {"factors": 4, "iterations": 2, "random_state": 0, "backend": backend, **params}
    return AlternatingLeastSquares(**options).fit(user_items, show_progress=False)


def row_of(weights, items, n_items):
    return sp.csr_matrix(
        (np.asarray(weights, np.float32), ([0] * len(items), items)), shape=(1, n_items)
    )


# -- no query or refit answers with NaN ------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_refits_and_queries_refuse_non_finite_results(user_items, backend):
    model = fit(user_items, backend, alpha=10.0)
    n_items = user_items.shape[1]
    # alpha * weight overflows float32: the confidences are infinite
    huge = row_of([3e38, 3e38], [1, 2], n_items)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recalculate_user(0, huge)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recommend(0, huge, recalculate_user=True)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recalculate_item(0, row_of([3e38], [3], user_items.shape[0]))
    before = model.user_factors.copy()
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.partial_fit_users([5], huge)
    np.testing.assert_array_equal(model.user_factors, before)  # nothing stored


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_scores_that_overflow_are_refused(user_items, backend):
    model = fit(user_items, backend)
    # finite factors whose products overflow float32
    model.user_factors = np.full(model.user_factors.shape, 1e20, np.float32)
    model.item_factors = np.full(model.item_factors.shape, 1e20, np.float32)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.recommend(0, user_items[0])
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.similar_items(0)
    with pytest.raises(ModelFitError, match="NaN or infinite"):
        model.similar_users(np.arange(3))


def test_the_cli_case_large_like_weight_on_a_fitted_model(user_items):
    """``--like-weight 1e10`` printed nan: the cpu exact solve overflows in float32."""
    model = fit(user_items)
    row = row_of([1e10] * 3, [1, 2, 3], user_items.shape[1])
    try:
        ids, scores = model.recommend(0, row, recalculate_user=True)
    except ModelFitError:
        return
    assert np.isfinite(scores).all()  # either refused, or finite


# -- model files are validated -----------------------------------------------------------------


@pytest.fixture
def model_file(user_items, tmp_path):
    path = tmp_path / "model.npz"
    fit(user_items).save(path)
    return path


def rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays.update(changes)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"regularization": np.array(np.nan)}, "regularization"),
        ({"regularization": np.array(-1.0)}, "regularization"),
        ({"alpha": np.array(np.inf)}, "alpha"),
        ({"alpha": np.array(0.0)}, "alpha"),
        ({"factors": np.array(0)}, "factors"),
        ({"iterations": np.array(-3)}, "iterations"),
        ({"cg_steps": np.array(0)}, "cg_steps"),
        ({"num_threads": np.array(-1)}, "num_threads"),
        ({"random_state": np.array(-5)}, "random_state"),
        ({"use_cg": np.array("yes")}, "use_cg"),
        ({"dtype": np.array("int8")}, "dtype"),
        ({"dtype": np.array("complex64")}, "dtype"),
        ({"dtype": np.array("no-such-type")}, "dtype"),
    ],
    ids=lambda value: str(value) if isinstance(value, str) else None,
)
def test_parameters_read_from_a_file_are_checked(model_file, change, message):
    rewrite(model_file, **change)
    with pytest.raises(ModelFileError, match=message):
        AlternatingLeastSquares.load(model_file)


def test_factor_dtypes_must_be_floating_and_equal(model_file):
    with np.load(model_file) as data:
        users, items = data["user_factors"], data["item_factors"]
    rewrite(model_file, item_factors=items.astype(np.float64))
    with pytest.raises(ModelFileError, match="float64"):
        AlternatingLeastSquares.load(model_file)
    rewrite(model_file, item_factors=items, user_factors=(users * 100).astype(np.int8))
    with pytest.raises(ModelFileError, match="int8"):
        AlternatingLeastSquares.load(model_file)


def test_saved_id_maps_are_checked(user_items, tmp_path):
    from als.data import Interactions
    from als.recommend import load_saved

    data = Interactions(user_items, np.arange(120), np.arange(80))
    path = tmp_path / "served.npz"
    fit(user_items).save(path, extra=data.to_arrays())
    assert load_saved(path)[1].shape == (120, 80)
    with np.load(path) as stored:
        indices, indptr = stored["extra/data_indices"].copy(), stored["extra/data_indptr"]
    for key, value, message in [
        ("extra/data_indices", np.where(np.arange(len(indices)) == 7, 80, indices), "out of"),
        ("extra/data_indices", np.where(np.arange(len(indices)) == 7, -1, indices), "out of"),
        ("extra/data_indptr", indptr[:-1], "indptr"),
        ("extra/data_indptr", indptr[::-1].copy(), "indptr"),
        ("extra/data_weights", np.full(len(indices), np.nan, np.float32), "NaN"),
        ("extra/data_shape", np.array([5, 5]), "shape"),
        ("extra/data_item_titles", np.array(["a", "b"]), "item_titles"),
    ]:
        broken = tmp_path / "broken.npz"
        broken.write_bytes(path.read_bytes())
        rewrite(broken, **{key: value})
        with pytest.raises(ValueError, match=message):
            load_saved(broken)


def stored_member_claiming(path, size):
    """An archive whose one member's directory entry claims ``size`` bytes it does not hold."""
    buffer = io.BytesIO()
    count = (size - 128) // 4
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": (count,)}
    )
    header = buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("user_factors.npy", header + bytes(64))
    raw = bytearray(path.read_bytes())
    claimed = (len(header) + count * 4).to_bytes(4, "little")
    local = raw.index(b"PK\x03\x04")
    raw[local + 22 : local + 26] = claimed  # uncompressed size, local header
    central = raw.index(b"PK\x01\x02")
    raw[central + 24 : central + 28] = claimed  # uncompressed size, central directory
    path.write_bytes(bytes(raw))


def test_declared_sizes_beyond_the_file_are_refused_before_allocation(tmp_path):
    path = tmp_path / "liar.npz"
    stored_member_claiming(path, 3 << 30)  # 3 GiB claimed, 200 bytes stored
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="can hold at most"):
            AlternatingLeastSquares.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20


def test_loading_peaks_near_the_size_of_the_arrays(tmp_path):
    model = AlternatingLeastSquares(factors=32, backend="cpu")
    rng = np.random.default_rng(0)
    model.user_factors = rng.random((40_000, 32), dtype=np.float32)
    model.item_factors = rng.random((10_000, 32), dtype=np.float32)
    path = tmp_path / "big.npz"
    model.save(path, extra={"ids": np.arange(40_000)})
    arrays = 50_000 * 32 * 4 + 40_000 * 8
    tracemalloc.start()
    try:
        loaded, extra = AlternatingLeastSquares.load(path, return_extra=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    assert peak <= 1.2 * arrays, f"peak {peak:,} bytes for {arrays:,} bytes of arrays"


SPECIAL_FILES = """
import json, os, sys, tempfile, resource
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from als import AlternatingLeastSquares
folder = tempfile.mkdtemp()
fifo = os.path.join(folder, "model.npz")
os.mkfifo(fifo)
link = os.path.join(folder, "zero.npz")
os.symlink("/dev/zero", link)
os.mkdir(os.path.join(folder, "dir.npz"))
results = {}
for name, path in [("fifo", fifo), ("dev-zero", "/dev/zero"), ("symlink", link),
                   ("directory", os.path.join(folder, "dir.npz"))]:
    try:
        AlternatingLeastSquares.load(path)
        results[name] = "loaded"
    except Exception as exc:
        results[name] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(results))
"""


def run_child(code, timeout=120, cwd=ROOT, **env):
    """Run ``code`` in a fresh interpreter in ``cwd``; return its completed process."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_load_opens_regular_files_only():
    try:
        done = run_child(SPECIAL_FILES, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("load blocked on a FIFO or kept reading a device")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for name, outcome in results.items():
        assert outcome.startswith("ModelFileError"), (name, outcome)
        assert "not a regular file" in outcome or "a directory" in outcome, (name, outcome)


# -- saving: permissions, symlinks, stale temporary files ---------------------------------------


@pytest.fixture
def small_model(user_items):
    return fit(user_items)


def test_a_new_file_follows_the_umask(small_model, tmp_path):
    previous = os.umask(0o022)
    try:
        small_model.save(tmp_path / "model.npz")
        os.umask(0o077)
        small_model.save(tmp_path / "private.npz")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "model.npz").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "private.npz").stat().st_mode) == 0o600


def test_an_existing_file_keeps_its_mode(small_model, tmp_path):
    path = tmp_path / "model.npz"
    small_model.save(path)
    path.chmod(0o640)
    small_model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_save_writes_through_a_symlink(small_model, tmp_path):
    target = tmp_path / "real" / "model.npz"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "current.npz"
    link.symlink_to(target)
    small_model.save(link)
    assert link.is_symlink() and link.resolve() == target.resolve()
    loaded = AlternatingLeastSquares.load(target)
    np.testing.assert_array_equal(loaded.item_factors, small_model.item_factors)
    assert not list(tmp_path.glob(".als-*")) and not list(target.parent.glob(".als-*"))


# A save that stops for good once the large factor array is in its temporary file, so the
# kill always lands mid-save (a save racing the kill could finish first on a fast machine).
KILLED_SAVER = """
import sys, time, numpy as np, numpy.lib.format as npy_format
from als import AlternatingLeastSquares
write_array = npy_format.write_array
def write_then_stop(fp, array, *args, **kwargs):
    write_array(fp, array, *args, **kwargs)
    if array.nbytes > 1_000_000:
        print("written", flush=True)
        time.sleep(600)
npy_format.write_array = write_then_stop
model = AlternatingLeastSquares(factors=64, backend="numpy")
model.user_factors = np.ones((400_000, 64), np.float32)
model.item_factors = np.ones((10, 64), np.float32)
print("saving", flush=True)
model.save(sys.argv[1])
"""


def test_the_next_save_removes_temporaries_of_killed_saves(small_model, tmp_path):
    path = tmp_path / "model.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_SAVER, str(path)], env=env, stdout=subprocess.PIPE
        )
        assert child.stdout.readline().strip() == b"saving"
        assert child.stdout.readline().strip() == b"written"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            p.stat().st_size for p in tmp_path.glob(".als-*.npz.tmp")
        ):
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert list(tmp_path.glob(".als-*.npz.tmp")), "the savers were killed before writing"
    # names are .als-<host>-<pid>-<random>.npz.tmp; older versions wrote .als-<random>.npz.tmp
    host = hashlib.sha1(platform.node().encode()).hexdigest()[:8]
    live = tmp_path / f".als-{host}-{os.getpid()}-live.npz.tmp"  # a save still running
    elsewhere = tmp_path / ".als-0123abcd-1-other.npz.tmp"  # another machine's, recent
    old = tmp_path / ".als-k2j4h5g6.npz.tmp"  # an older version's, untouched for two days
    for file in (live, elsewhere, old):
        file.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    small_model.save(path)
    assert sorted(tmp_path.glob(".als-*.npz.tmp")) == sorted([live, elsewhere])
    AlternatingLeastSquares.load(path)


# -- serving from many threads ------------------------------------------------------------------


def blas_threads():
    return sorted((lib["filepath"], lib["num_threads"]) for lib in threadpool_info())


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_queries_from_eight_threads_match_sequential_answers(user_items, backend):
    model = fit(user_items, backend, factors=6)
    users = np.arange(0, user_items.shape[0], 5)

    def answer(user):
        liked = user_items[user]
        return (
            model.recommend(user, liked, N=5),
            model.recommend(user, liked, N=5, recalculate_user=True),
            model.similar_items(user % user_items.shape[1], N=5),
            model.similar_users(user, N=5),
            model.explain(user, user_items, itemid=user % user_items.shape[1], N=3)[:2],
        )

    sequential = [answer(user) for user in users]
    before = blas_threads()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(2):
            concurrent = list(pool.map(answer, users))
            for user, (ours, theirs) in enumerate(zip(concurrent, sequential, strict=True)):
                for (ids, scores), (_, expected) in zip(ours[:4], theirs[:4], strict=True):
                    # same inputs, same kernels: equal up to float32 rounding of the products
                    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
                    assert len(ids) == len(expected)
                total, contributions = ours[4]
                np.testing.assert_allclose(total, theirs[4][0], rtol=1e-5, atol=1e-6)
                assert len(contributions) == len(theirs[4][1]), user
    assert blas_threads() == before


def test_blas_limits_are_restored_exactly_after_overlapping_queries(user_items):
    """Two threads' limits overlap without nesting: A in, B in, A out, B out."""
    model = fit(user_items, "cpu")
    before = blas_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with model.backend_.threads():
            a_in.set()
            b_in.wait(30)
            model.recommend(0, user_items[0], N=3)
        a_out.set()

    def second():
        a_in.wait(30)
        with model.backend_.threads():
            b_in.set()
            a_out.wait(30)
            model.recommend(1, user_items[1], N=3)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert blas_threads() == before


def test_fit_on_a_model_that_is_fitting_raises(user_items):
    model = AlternatingLeastSquares(factors=4, iterations=3, random_state=0, backend="numpy")
    started, release = threading.Event(), threading.Event()

    def wait_in_first_iteration(iteration, seconds, loss):
        started.set()
        release.wait(30)

    first = threading.Thread(
        target=model.fit, args=(user_items,), kwargs={"callback": wait_in_first_iteration}
    )
    first.start()
    try:
        assert started.wait(30)
        with pytest.raises(RuntimeError, match="already running"):
            model.fit(user_items, show_progress=False)
    finally:
        release.set()
        first.join()
    reference = fit(user_items, "numpy", iterations=3)
    np.testing.assert_allclose(model.user_factors, reference.user_factors, rtol=1e-5, atol=1e-7)
    model.fit(user_items, show_progress=False)  # and once it is done, fit works again


# -- sizes and scalars ------------------------------------------------------------------------


def test_absurd_partial_fit_growth_raises_with_the_sizes(user_items):
    model = fit(user_items, "numpy")
    row = user_items[0]
    with pytest.raises(ValueError, match=r"1,000,000,000.*120"):
        model.partial_fit_users([10**9], row)
    assert model.user_factors.shape == (120, 4)
    model.partial_fit_users([120 + 500], row)  # a gap no larger than the model is fine
    assert model.user_factors.shape == (621, 4)
    with pytest.raises(ValueError, match="itemids"):
        model.partial_fit_items([10**7], user_items.T.tocsr()[0])


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_zero_dimensional_arrays_work_as_scalars(user_items, backend):
    model = fit(user_items, backend)
    liked = user_items[3]
    ids, scores = model.recommend(np.array(3), liked, N=np.array(4))
    expected_ids, expected = model.recommend(3, liked, N=4)
    assert ids.ndim == 1 and len(ids) == 4
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    factors = model.recalculate_user(np.array(3), liked)
    assert factors.shape == (4,)
    ids, _ = model.similar_items(np.array(2), N=np.int64(3))
    assert ids.shape == (3,)
    total, _, _ = model.explain(np.array(3), user_items, itemid=np.array(5))
    assert total == pytest.approx(model.explain(3, user_items, itemid=5)[0])
    scalar = AlternatingLeastSquares(factors=2, regularization=np.array(0.1), alpha=np.array(2.0))
    scalar.fit(user_items, show_progress=False)


def test_narrowing_to_int32_is_checked():
    from als.backends.base import as_int32

    np.testing.assert_array_equal(as_int32(np.array([0, 5], np.int64), "ids", 10), [0, 5])
    assert as_int32(np.array([2**31 - 1]), "ids").dtype == np.int32
    with pytest.raises(ValueError, match="2,147,483,648.*int32"):
        as_int32(np.array([1, 2**31], np.int64), "ids")
    with pytest.raises(ValueError, match="int32"):
        as_int32(np.array([-(2**31) - 1], np.int64), "ids", None)


KERNEL_INDEX = """
import numpy as np, scipy.sparse as sp
from als.backends.base import get_backend
backend = get_backend("cpu")
factors = np.ones((4, 2), np.float32)
big = 2**31 + 5
exclude = sp.csr_matrix((np.ones(1, np.float32), (np.array([0]), np.array([big]))),
                        shape=(1, big + 1))
try:
    backend.topk(np.ones((1, 2), np.float32), factors, 2, exclude=exclude)
    print("ran")
except ValueError as exc:
    print("refused", exc)
"""


def test_an_index_beyond_int32_never_reaches_a_kernel():
    done = run_child(KERNEL_INDEX)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused") and "int32" in done.stdout


UNCACHED = """
import warnings
import numpy as np, scipy.sparse as sp
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from backends.base import get_backend  # the copy, as a package of its own
    backend = get_backend("cpu")
X, Y = np.zeros((3, 2), np.float32), np.full((4, 2), 0.1, np.float32)
Cui = sp.csr_matrix(np.eye(3, 4, dtype=np.float32))
with backend.threads():
    backend.solve(Cui, X, Y, Y.T @ Y + 0.1 * np.eye(2, dtype=np.float32), None)
assert np.isfinite(X).all() and np.abs(X).sum() > 0
messages = [str(w.message) for w in caught if "uncached" in str(w.message)]
print(len(messages))
"""


def test_without_a_writable_cache_the_cpu_backend_runs_uncached(tmp_path):
    # a copy of the backends whose __pycache__ is a file, HOME and NUMBA_CACHE_DIR under a
    # file: no cache folder can be made anywhere, even by root
    package = tmp_path / "backends"
    package.mkdir()
    for source in (ROOT / "backends").glob("*.py"):
        (package / source.name).write_bytes(source.read_bytes())
    (package / "__pycache__").write_text("not a folder")
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        "PYTHONPATH": str(tmp_path),
        "HOME": str(blocker / "home"),
        "NUMBA_CACHE_DIR": str(blocker / "numba"),
        "XDG_CACHE_HOME": str(blocker / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = run_child(UNCACHED, timeout=300, cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"  # one warning, not one per kernel


def test_ids_given_as_one_scalar_where_a_list_is_expected(user_items):
    model = fit(user_items, "numpy")
    ids, _ = model.recommend(0, user_items[0], N=80, filter_items=np.array(7))
    assert 7 not in ids
    ids, _ = model.similar_items(1, N=5, items=np.int64(9))
    np.testing.assert_array_equal(ids, [9])
    model.partial_fit_users(np.array(3), user_items[3])


def test_partial_fit_while_fitting_raises(user_items):
    model = AlternatingLeastSquares(factors=4, iterations=2, random_state=0, backend="numpy")
    started, release = threading.Event(), threading.Event()

    def wait(iteration, seconds, loss):
        started.set()
        release.wait(30)

    first = threading.Thread(target=model.fit, args=(user_items,), kwargs={"callback": wait})
    first.start()
    try:
        assert started.wait(30)
        with pytest.raises(RuntimeError, match="fit is running"):
            model.partial_fit_users([0], user_items[0])
    finally:
        release.set()
        first.join()


def test_a_float16_model_loads_on_a_cpu_backend_as_float32(user_items, tmp_path):
    model = fit(user_items, "numpy")
    path = tmp_path / "half.npz"
    model.save(path)
    rewrite(
        path,
        dtype=np.array("float16"),
        user_factors=model.user_factors.astype(np.float16),
        item_factors=model.item_factors.astype(np.float16),
    )
    with pytest.warns(UserWarning, match="float16"):
        loaded = AlternatingLeastSquares.load(path, backend="cpu")
    assert loaded.user_factors.dtype == np.float32
    ids, scores = loaded.recommend(0, user_items[0], N=5)
    assert np.isfinite(scores).all() and len(ids) == 5


def test_save_refuses_extras_that_would_need_pickles(user_items, tmp_path):
    with pytest.raises(TypeError, match="pickles"):
        fit(user_items, "numpy").save(tmp_path / "m.npz", extra={"meta": np.array([{}, 1])})
    assert not list(tmp_path.iterdir())
