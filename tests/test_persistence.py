"""Model files: round trips (als and implicit, both ways, every format), files never trusted,
saves that are atomic and keep ordinary permissions.

Matrices are small and built here; the cases that could hang or crash an unprotected build (a
FIFO, /dev/zero, a save killed mid-write) run in a child process with a time limit.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import platform
import signal
import stat
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import implicit.als
import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS

from als import AlternatingLeastSquares, ModelFileError
from als.model import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[1]

#: the arrays implicit 0.7's own ``save`` writes: the top level of a file ``save`` writes
IMPLICIT_KEYS = {
    "user_factors",
    "item_factors",
    "regularization",
    "factors",
    "num_threads",
    "iterations",
    "use_native",
    "use_cg",
    "cg_steps",
    "calculate_training_loss",
    "dtype",
    "random_state",
    "alpha",
}


def fit(user_items, backend="cpu", **params):
    options = {"factors": 4, "iterations": 2, "random_state": 0, "backend": backend, **params}
    return AlternatingLeastSquares(**options).fit(user_items, show_progress=False)


@pytest.fixture(scope="module")
def small_model(small_matrix):
    return fit(small_matrix, factors=6)


@pytest.fixture
def model_file(small_model, tmp_path):
    path = tmp_path / "model.npz"
    small_model.save(path)
    return path


def rewrite(path, **changes):
    """Save the arrays of ``path`` again with some replaced (None removes one)."""
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays.update(changes)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def params_of(model):
    """The model's constructor parameters, as its attributes of the same names hold them."""
    return {name: getattr(model, name) for name in inspect.signature(type(model)).parameters}


def assert_same_recommendations(ours, theirs, user_items, users):
    """Both models rank every user's items alike: the same scores, each one the id's score.

    Identical factors, scored by two top-k implementations: the scores agree to float32
    rounding, and ids are compared through their scores (tied ids may come in any order).
    """
    our_ids, our_scores = ours.recommend(users, user_items[users], N=10)
    their_ids, their_scores = theirs.recommend(users, user_items[users], N=10)
    np.testing.assert_allclose(our_scores, their_scores, rtol=1e-5, atol=1e-6)
    user_factors = ours.user_factors[users].astype(np.float64)
    item_factors = ours.item_factors.astype(np.float64)
    for ids, scores in ((our_ids, our_scores), (their_ids, their_scores)):
        exact = np.take_along_axis(user_factors @ item_factors.T, ids.astype(np.int64), axis=1)
        np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-6)


# -- round trips -------------------------------------------------------------------------------


@pytest.fixture
def fitted(backend_name, small_matrix):
    model = AlternatingLeastSquares(factors=8, iterations=3, random_state=0, backend=backend_name)
    return model.fit(small_matrix, show_progress=False)


def test_save_and_load_round_trip(fitted, small_matrix, tmp_path):
    path = tmp_path / "model"
    fitted.save(path, extra={"item_ids": np.array(["a", "b"])})
    loaded, extra = AlternatingLeastSquares.load(
        path, backend=fitted.backend_name, return_extra=True
    )
    assert (tmp_path / "model.npz").exists()
    assert extra["item_ids"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(loaded.item_factors, fitted.item_factors)
    assert loaded.factors == 8 and loaded.iterations == 3 and loaded.cg_steps == 3
    np.testing.assert_array_equal(
        loaded.recommend(1, small_matrix[1])[0], fitted.recommend(1, small_matrix[1])[0]
    )


@pytest.mark.parametrize(
    "params",
    [
        {"cg_steps": None},
        {"use_cg": False, "cg_steps": 5},
        {"use_gpu": False, "backend": "numpy", "num_threads": 2, "use_native": False},
        {"solver": "ials++", "block_size": 2, "confidence": "hkv", "alpha0": 0.5, "nu": 0.5},
        {"epsilon": 3.0, "init_stddev": 0.1, "calculate_training_loss": True, "alpha": 2.0},
    ],
    ids=["exact-by-cg-steps", "exact-by-use-cg", "backend", "ials++", "more-options"],
)
def test_every_parameter_survives_save_and_load(small_matrix, tmp_path, params):
    model = fit(small_matrix, **{"backend": "cpu", **params})
    model.save(tmp_path / "model.npz")
    loaded = AlternatingLeastSquares.load(tmp_path / "model.npz")
    assert params_of(loaded) == params_of(model)
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)


def test_load_reads_an_implicit_file(backend_name, small_matrix):
    theirs = ImplicitALS(factors=6, iterations=2, regularization=0.2, random_state=4)
    theirs.fit(small_matrix, show_progress=False)
    buffer = io.BytesIO()
    theirs.save(buffer)
    buffer.seek(0)
    ours = AlternatingLeastSquares.load(buffer, backend=backend_name)
    assert ours.regularization == 0.2 and ours.factors == 6 and ours.random_state == 4
    np.testing.assert_array_equal(ours.user_factors, theirs.user_factors)
    np.testing.assert_array_equal(
        ours.recommend(2, small_matrix[2])[0], theirs.recommend(2, small_matrix[2])[0]
    )


@pytest.mark.parametrize(
    "load",
    [ImplicitALS.load, lambda path: implicit.als.AlternatingLeastSquares(use_gpu=False).load(path)],
    ids=["implicit.cpu.als", "implicit.als"],
)
@pytest.mark.parametrize("cg_steps", [3, None], ids=["cg", "exact"])
def test_implicit_loads_a_file_als_saved(small_matrix, tmp_path, load, cg_steps):
    params = {"regularization": 0.2, "alpha": 2.0, "random_state": 4, "cg_steps": cg_steps}
    ours = AlternatingLeastSquares(factors=6, iterations=2, backend="cpu", **params)
    ours.fit(small_matrix, show_progress=False)
    ours.save(tmp_path / "model.npz", extra={"item_ids": np.arange(200)})
    theirs = load(str(tmp_path / "model.npz"))
    assert isinstance(theirs, ImplicitALS)
    np.testing.assert_array_equal(theirs.user_factors, ours.user_factors)
    np.testing.assert_array_equal(theirs.item_factors, ours.item_factors)
    assert theirs.dtype == np.float32 and theirs.factors == 6 and theirs.random_state == 4
    assert theirs.regularization == 0.2 and theirs.alpha == 2.0 and theirs.iterations == 2
    # implicit's exact solve is use_cg=False; its solver property is still its own
    assert theirs.use_cg == (cg_steps is not None) and theirs.cg_steps == 3
    assert callable(theirs.solver)
    assert_same_recommendations(ours, theirs, small_matrix, np.arange(0, 300, 7))


def test_implicit_trains_on_from_a_file_als_saved(small_matrix, tmp_path):
    """implicit, given our file, continues the fit as we do (the exact solve, float64)."""
    ours = AlternatingLeastSquares(
        factors=5, iterations=2, random_state=1, cg_steps=None, dtype=np.float64, backend="cpu"
    )
    ours.fit(small_matrix, show_progress=False)
    ours.save(tmp_path / "model.npz")
    theirs = ImplicitALS.load(str(tmp_path / "model.npz"))
    theirs.fit(small_matrix, show_progress=False)
    ours.fit(small_matrix, show_progress=False)
    # float64 normal equations solved in another order, over two more iterations
    np.testing.assert_allclose(ours.user_factors, theirs.user_factors, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.item_factors, theirs.item_factors, rtol=1e-6, atol=1e-9)


def test_a_saved_file_holds_implicits_arrays_at_the_top_and_ours_apart(small_model, model_file):
    small_model.save(model_file, extra={"ids": np.arange(3)})
    with np.load(model_file) as data:
        keys = set(data.files)
    top = {key for key in keys if "/" not in key}
    assert top == IMPLICIT_KEYS | {"format_version"}
    assert {"als/solver", "als/confidence", "als/cg_steps", "extra/ids"} <= keys
    assert {key.split("/")[0] for key in keys - top} == {"als", "extra"}


def format_1_arrays(model, extra):
    """The arrays a model file of format 1 held: every parameter at the top level."""
    names = ("factors", "regularization", "alpha", "use_native", "use_cg", "iterations")
    names += ("calculate_training_loss", "num_threads", "cg_steps", "confidence", "epsilon")
    names += ("alpha0", "nu", "init_stddev", "solver", "block_size")
    arrays = {name: getattr(model, name) for name in names}
    arrays["cg_steps"] = -1 if model.cg_steps is None else model.cg_steps
    arrays.update(dtype=np.dtype(model.dtype).name, format_version=1)
    arrays.update(user_factors=model.user_factors, item_factors=model.item_factors)
    arrays.update(backend=model.backend, use_gpu=model.use_gpu, random_state=model.random_state)
    arrays.update({f"extra/{key}": value for key, value in extra.items()})
    return {key: value for key, value in arrays.items() if value is not None}


def test_a_format_1_file_still_loads(small_matrix, tmp_path):
    params = {"cg_steps": None, "solver": "ials++", "block_size": 2, "confidence": "log"}
    params.update(epsilon=2.0, alpha0=0.5, nu=1.0, init_stddev=0.1, use_gpu=False)
    model = fit(small_matrix, "numpy", random_state=3, **params)
    path = tmp_path / "model.npz"
    np.savez(path, **format_1_arrays(model, {"ids": np.arange(4)}))
    loaded, extra = AlternatingLeastSquares.load(path, return_extra=True)
    assert params_of(loaded) == params_of(model)
    assert loaded.backend_name == "numpy" and loaded.cg_steps is None
    np.testing.assert_array_equal(loaded.user_factors, model.user_factors)
    np.testing.assert_array_equal(loaded.item_factors, model.item_factors)
    np.testing.assert_array_equal(extra["ids"], np.arange(4))


def test_a_float16_model_loads_on_a_cpu_backend_as_float32(small_matrix, tmp_path):
    model = fit(small_matrix, "numpy")
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
    ids, scores = loaded.recommend(0, small_matrix[0], N=5)
    assert np.isfinite(scores).all() and len(ids) == 5


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


def test_save_refuses_extras_that_would_need_pickles(small_matrix, tmp_path):
    with pytest.raises(TypeError, match="pickles"):
        fit(small_matrix, "numpy").save(tmp_path / "m.npz", extra={"meta": np.array([{}, 1])})
    assert not list(tmp_path.iterdir())


# -- files are never trusted -------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        AlternatingLeastSquares.load(tmp_path / "absent.npz")


def test_truncated_file(model_file):
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="not a readable model file"):
        AlternatingLeastSquares.load(model_file)


def test_corrupted_bytes(model_file):
    raw = bytearray(model_file.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(64)
    model_file.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError):
        AlternatingLeastSquares.load(model_file)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable model file"):
        AlternatingLeastSquares.load(text)
    archive = tmp_path / "foreign.npz"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "not an array")
    with pytest.raises(ModelFileError, match="readme.txt"):
        AlternatingLeastSquares.load(archive)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.ones(3))
    with pytest.raises(ModelFileError, match="no factors, item_factors, user_factors"):
        AlternatingLeastSquares.load(other)


def test_load_refuses_pickles_and_future_versions(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, user_factors=np.array([object()], dtype=object))
    with pytest.raises(ModelFileError, match="never contain pickles"):
        AlternatingLeastSquares.load(path)
    np.savez(
        path,
        user_factors=np.zeros((1, 1)),
        item_factors=np.zeros((1, 1)),
        factors=1,
        format_version=99,
    )
    with pytest.raises(ModelFileError, match="newer als"):
        AlternatingLeastSquares.load(path)


def test_future_version(model_file):
    rewrite(model_file, format_version=np.array(FORMAT_VERSION + 1))
    with pytest.raises(ModelFileError, match="newer als"):
        AlternatingLeastSquares.load(model_file)


def test_inconsistent_shapes_and_values(model_file):
    rewrite(model_file, item_factors=np.ones((4, 5), np.float32))
    with pytest.raises(ModelFileError, match="item_factors"):
        AlternatingLeastSquares.load(model_file)
    rewrite(model_file, item_factors=np.ones((4, 6), np.float32), factors=np.array([6, 6]))
    with pytest.raises(ModelFileError, match="single value"):
        AlternatingLeastSquares.load(model_file)
    rewrite(model_file, factors=np.array(6), item_factors=np.full((4, 6), np.nan, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        AlternatingLeastSquares.load(model_file)


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
        ({"als/cg_steps": np.array(0)}, "als/cg_steps"),
        ({"als/use_cg": np.array("no")}, "als/use_cg"),
        ({"als/solver": np.array(["cg", "cg"])}, "als/solver"),
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


def test_saved_id_maps_are_checked(small_matrix, tmp_path):
    from als.data import Interactions
    from als.recommend import load_saved

    n_users, n_items = small_matrix.shape
    data = Interactions(small_matrix, np.arange(n_users), np.arange(n_items))
    path = tmp_path / "served.npz"
    fit(small_matrix).save(path, extra=data.to_arrays())
    assert load_saved(path)[1].shape == (n_users, n_items)
    with np.load(path) as stored:
        indices, indptr = stored["extra/data_indices"].copy(), stored["extra/data_indptr"]
    for key, value, message in [
        ("extra/data_indices", np.where(np.arange(len(indices)) == 7, n_items, indices), "out of"),
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


def member_header_claiming(path, shape):
    """An archive whose one array's own header claims ``shape``, with 16 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("user_factors.npy", buffer.getvalue() + bytes(16))


def test_declared_sizes_beyond_the_file_are_refused_before_allocation(tmp_path):
    """The zip directory claiming 3 GiB of 200 stored bytes, and an array header claiming
    10^12 elements in a file of a few bytes."""
    directory_liar, header_liar = tmp_path / "liar.npz", tmp_path / "huge.npz"
    stored_member_claiming(directory_liar, 3 << 30)
    member_header_claiming(header_liar, (10**6, 10**6))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="can hold at most"):
            AlternatingLeastSquares.load(directory_liar)
        with pytest.raises(ModelFileError, match="truncated or corrupted"):
            AlternatingLeastSquares.load(header_liar)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 << 20


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


def test_load_opens_regular_files_only():
    try:
        done = subprocess.run(
            [sys.executable, "-c", SPECIAL_FILES],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("load blocked on a FIFO or kept reading a device")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for name, outcome in results.items():
        assert outcome.startswith("ModelFileError"), (name, outcome)
        assert "not a regular file" in outcome or "a directory" in outcome, (name, outcome)


# -- saving: permissions, symlinks, killed saves --------------------------------------------


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


def test_killed_saves_leave_the_file_intact_and_the_next_save_cleans_up(small_model, tmp_path):
    path = tmp_path / "model.npz"
    small_model.save(path)
    before = path.read_bytes()
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
    assert path.read_bytes() == before
    loaded = AlternatingLeastSquares.load(path)
    np.testing.assert_array_equal(loaded.user_factors, small_model.user_factors)
    # names are .als-<host>-<pid>-<random>.npz.tmp, or .als-<random>.npz.tmp without either
    host = hashlib.sha1(platform.node().encode()).hexdigest()[:8]
    live = tmp_path / f".als-{host}-{os.getpid()}-live.npz.tmp"  # a save still running
    elsewhere = tmp_path / ".als-0123abcd-1-other.npz.tmp"  # another machine's, recent
    old = tmp_path / ".als-k2j4h5g6.npz.tmp"  # a name without host and pid, two days old
    for file in (live, elsewhere, old):
        file.write_bytes(b"partial")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    small_model.save(path)
    assert sorted(tmp_path.glob(".als-*.npz.tmp")) == sorted([live, elsewhere])
    AlternatingLeastSquares.load(path)
