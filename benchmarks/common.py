"""Pieces every benchmark shares: data sets, engines, timing, FLOP counts, machine facts.

Used by ``benchmarks.fit_speed``, the pytest-benchmark suites (``benchmarks/bench_*.py``) and
the runner ``python -m benchmarks.compare``, so that all of them build the same matrices,
construct the engines with the same parameters and seed, and time them the same way.

Engines
    ``als-cpu`` (our Numba backend), ``als-cuda`` (our CuPy backend), ``implicit-cpu`` and
    ``implicit-gpu`` (implicit 0.7's classes, constructed directly so that neither picks a
    device by itself). Every engine gets the same ``factors``, ``regularization``,
    ``alpha``, ``cg_steps``, ``iterations`` and ``random_state``; the CPU engines use every
    core (``num_threads=0``), and implicit runs under ``threadpool_limits(1, "blas")`` as its
    documentation asks.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse

ROOT = Path(__file__).resolve().parents[1]

#: where MovieLens and Last.fm live; tests and CI point ALS_DATA_DIR at ../shared/data
DATA_DIR = Path(os.environ.get("ALS_DATA_DIR", ROOT.parent / "shared" / "data"))

#: generated matrices are kept here between runs (generating 50M entries takes a while)
CACHE_DIR = Path(os.environ.get("ALS_BENCH_CACHE", Path.home() / ".cache" / "als" / "benchmarks"))

ENGINES = ("als-cpu", "als-cuda", "implicit-cpu", "implicit-gpu")

#: the parameters every engine shares, unless a benchmark says otherwise
DEFAULTS = {"regularization": 0.01, "alpha": 1.0, "cg_steps": 3, "seed": 0, "threads": 0}

#: synthetic power-law data sets: name -> (users, items, non-zeros); about 100 ratings per
#: user, density falling with size as it does from MovieLens-1M to MovieLens-20M
SYNTHETIC = {
    "synthetic-1m": (10_000, 4_000, 1_000_000),
    "synthetic-10m": (100_000, 20_000, 10_000_000),
    "synthetic-50m": (500_000, 50_000, 50_000_000),
    # a wide catalogue for the query benchmarks (issue 14's 30,000 items)
    "synthetic-30k-items": (20_000, 30_000, 1_000_000),
}

#: real data sets, by the name ``als.data.load`` knows them
REAL = ("ml-100k", "ml-1m", "lastfm-2k")

#: bumped whenever ``power_law_matrix`` changes, so cached matrices are regenerated
GENERATOR_VERSION = 2


# -- data -------------------------------------------------------------------------------------


def power_law_matrix(n_users, n_items, nnz, seed=0):
    """Zipf-like user activity and item popularity, weights 1..5, ``nnz`` distinct entries.

    User ``k`` (before the ids are shuffled) is drawn with probability ~ ``k^-0.8`` and item
    ``k`` with ~ ``k^-0.9``. Pairs are drawn in rounds until ``nnz`` distinct ones exist (at
    most eight rounds: a tiny, dense shape may hold fewer), then ``nnz`` of them are kept
    uniformly at random, so no range of ids is cut off.
    """
    rng = np.random.default_rng(seed)
    user_cdf = np.cumsum(1.0 / np.arange(1, n_users + 1) ** 0.8)
    item_cdf = np.cumsum(1.0 / np.arange(1, n_items + 1) ** 0.9)
    user_ids, item_ids = rng.permutation(n_users), rng.permutation(n_items)
    keys = np.zeros(0, dtype=np.int64)
    for _ in range(8):
        draws = max(int((nnz - len(keys)) * 1.3), 1000)
        users = user_ids[np.searchsorted(user_cdf, rng.random(draws) * user_cdf[-1])]
        items = item_ids[np.searchsorted(item_cdf, rng.random(draws) * item_cdf[-1])]
        keys = _sorted_unique(np.concatenate([keys, users.astype(np.int64) * n_items + items]))
        del users, items
        if len(keys) >= nnz:
            break
    if len(keys) > nnz:
        keys = keys[np.sort(rng.choice(len(keys), nnz, replace=False))]
    rows = keys // n_items
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    del rows
    columns = (keys % n_items).astype(np.int32)
    del keys
    weights = rng.integers(1, 6, len(columns)).astype(np.float32)
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    return scipy.sparse.csr_matrix((weights, columns, indptr), shape=(n_users, n_items))


def _sorted_unique(values):
    """``np.unique`` for a 1-D array by sorting: NumPy 2.4's is ten times slower on 10M+."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def dataset_names(large=True):
    """Every data set a benchmark may use; ``large=False`` leaves out 10M and 50M."""
    synthetic = list(SYNTHETIC) if large else ["synthetic-1m"]
    return [*REAL, *synthetic]


class DatasetMissing(RuntimeError):
    """A real data set is not in ``DATA_DIR`` (benchmarks never download)."""


def load_dataset(name):
    """Return the users x items float32 CSR of a data set, caching synthetic ones on disk.

    Real data sets keep their raw weights (ratings, or Last.fm play counts) as confidences.

    Raises
    ------
    DatasetMissing
        A real data set is not in ``DATA_DIR``.
    ValueError
        An unknown name.
    """
    if name in SYNTHETIC:
        users, items, nnz = SYNTHETIC[name]
        path = CACHE_DIR / f"{name}-seed0-v{GENERATOR_VERSION}.npz"
        if path.exists():
            return scipy.sparse.load_npz(path).tocsr()
        matrix = power_law_matrix(users, items, nnz, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename, so an interrupted run never leaves half a file behind
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
            scipy.sparse.save_npz(f, matrix, compressed=False)
        os.replace(f.name, path)
        return matrix
    if name not in REAL:
        raise ValueError(f"unknown data set {name!r}: choose from {', '.join(dataset_names())}")
    os.environ.setdefault("ALS_DATA_DIR", str(DATA_DIR))
    from als.data import load
    from als.datasets import DatasetNotFoundError

    try:
        data = load(name, download=False)
    except (DatasetNotFoundError, FileNotFoundError) as exc:
        raise DatasetMissing(f"{name} is not in {os.environ['ALS_DATA_DIR']}: {exc}") from exc
    return data.user_items.astype(np.float32).tocsr()


# -- engines ----------------------------------------------------------------------------------


def engine_unavailable(engine):
    """None when ``engine`` can run here, else the reason it cannot."""
    if engine not in ENGINES:
        return f"unknown engine {engine!r} (choose from {', '.join(ENGINES)})"
    if engine.startswith("als-"):
        from als.backends.base import BackendUnavailable, get_backend

        try:
            get_backend(engine[4:])
        except BackendUnavailable as exc:
            return str(exc)
        return None
    try:
        import implicit.gpu
    except ImportError as exc:
        return f"implicit does not import: {exc}"
    if engine == "implicit-gpu" and not implicit.gpu.HAS_CUDA:
        return "implicit was built without CUDA or sees no GPU (implicit.gpu.HAS_CUDA is False)"
    if engine == "implicit-gpu" and not getattr(implicit.gpu, "HAS_RMM", True):
        return "implicit's GPU models need RMM, which is not installed"
    return None


def make_model(engine, factors, iterations, **params):
    """An untrained model of ``engine`` with the shared parameters (see ``DEFAULTS``)."""
    p = {**DEFAULTS, **params}
    common = dict(
        factors=factors,
        regularization=p["regularization"],
        alpha=p["alpha"],
        iterations=iterations,
        random_state=p["seed"],
    )
    if engine.startswith("als-"):
        from als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            backend=engine[4:], cg_steps=p["cg_steps"], num_threads=p["threads"], **common
        )
    if engine == "implicit-cpu":
        from implicit.cpu.als import AlternatingLeastSquares as ImplicitCPU

        model = ImplicitCPU(num_threads=p["threads"], **common)
    elif engine == "implicit-gpu":
        from implicit.gpu.als import AlternatingLeastSquares as ImplicitGPU

        model = ImplicitGPU(**common)
    else:
        raise ValueError(f"unknown engine {engine!r}")
    # implicit keeps cg_steps as an attribute, not a constructor parameter
    model.cg_steps = p["cg_steps"]
    return model


def engine_context(engine):
    """Limits an engine runs under: single-threaded BLAS for implicit, as its docs ask."""
    if engine.startswith("implicit-"):
        # threadpoolctl limits only the libraries loaded when the limit is set: load NumPy's
        # BLAS, SciPy's (a different library) and implicit's first
        import implicit.cpu.als  # noqa: F401
        import numpy.linalg  # noqa: F401
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1, "blas")
    return contextlib.nullcontext()


#: agreement with implicit on the 2,000 x 1,000 power-law matrix, as tests/test_agreement.py
FACTOR_TOLERANCE = 1e-2


def host(array):
    """A NumPy array of a factor array from any engine (CuPy arrays are copied)."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def agreement_error(engine):
    """None when ``engine``'s factors match implicit-cpu's on a small case, else why not.

    Both fit 5 iterations of 32 factors from seed 42 on a 2,000 x 1,000 power-law matrix
    with 80,000 entries; the largest factor difference, relative to the largest factor,
    must stay under ``FACTOR_TOLERANCE``.
    """
    user_items = power_law_matrix(2000, 1000, 80_000, seed=2)
    fitted = {}
    for name in ("implicit-cpu", engine):
        with engine_context(name):  # implicit checks the BLAS limit when constructed
            model = make_model(name, 32, 5, seed=42)
            model.fit(user_items, show_progress=False)
        fitted[name] = [host(model.user_factors), host(model.item_factors)]
    pairs = zip(("user", "item"), fitted[engine], fitted["implicit-cpu"], strict=True)
    for side, ours, theirs in pairs:
        difference = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
        if not difference < FACTOR_TOLERANCE:
            return (
                f"{engine} {side} factors differ from implicit's by {difference:.2e} "
                f"(relative to the largest), more than {FACTOR_TOLERANCE}"
            )
    return None


def synchronizer(engine):
    """A function that waits for the engine's device work (a no-op on the CPU)."""
    if engine in ("als-cuda", "implicit-gpu"):
        # without CuPy there is nothing to wait with: implicit-gpu's times then end
        # wherever implicit itself waits for the device
        with contextlib.suppress(ImportError):
            import cupy

            return cupy.cuda.Device().synchronize
    return lambda: None


def seconds_per_iteration(make, user_items, iterations, sync=None):
    """Median seconds of one ALS iteration, after a warm-up fit of one iteration.

    ``make(n)`` returns an untrained model of ``n`` iterations. A model of ``iterations + 1``
    iterations is fitted; every iteration's end is stamped in the fit callback after
    ``sync()`` (device work finished), and the differences between stamps are the
    iteration times. The first iteration, which also carries per-fit set-up (transpose,
    copies to the device), is left out.

    Returns
    -------
    median_s, times_s, warmup_s
        The median, every timed iteration, and the wall time of the warm-up fit (first call:
        Numba's compile or cache load, CUDA module loading, plus one iteration and set-up).
    """
    sync = sync or (lambda: None)
    start = time.perf_counter()
    make(1).fit(user_items, show_progress=False)
    sync()
    warmup_s = time.perf_counter() - start
    stamps = []

    def stamp(iteration, seconds, loss):
        sync()
        stamps.append(time.perf_counter())

    make(iterations + 1).fit(user_items, show_progress=False, callback=stamp)
    times = list(np.diff(stamps))
    return statistics.median(times), times, warmup_s


COMPILE_PROBE = """
import time, numpy as np, scipy.sparse as sp
start = time.perf_counter()
from als import AlternatingLeastSquares
m = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=0)
AlternatingLeastSquares(factors=8, iterations=1, backend="cpu", random_state=0).fit(
    m, show_progress=False
).recommend(0, m[0])
print(time.perf_counter() - start)
"""


def run_probe(code, *args, checkout=ROOT, **env):
    """Run ``python -c code args...`` in a fresh process importing ``checkout``'s packages,
    with ``env`` added to the environment; return the last line it printed.

    It runs in ``checkout``: ``python -c`` puts the working folder first on the path.
    """
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(checkout), **env},
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def compile_times():
    """First-call seconds (import + compile/load + tiny fit) with an empty, then a warm cache."""
    with tempfile.TemporaryDirectory() as cache:
        runs = [float(run_probe(COMPILE_PROBE, NUMBA_CACHE_DIR=cache)) for _ in range(2)]
    return {"cold_s": runs[0], "cached_s": runs[1]}


# -- work counted -----------------------------------------------------------------------------

FLOP_FORMULA = (
    "per half-iteration solving n rows against the m rows of the other side, with nnz "
    "stored entries (nnz+ of them positive), f factors and s CG steps: "
    "Gram 2*m*f^2 + right-hand sides 2*nnz+*f + (s+1)*(2*n*f^2 + 4*nnz*f) + 10*s*n*f; "
    "an iteration is the user half (n = users, m = items) plus the item half (n = items, "
    "m = users)"
)


def half_iteration_flops(n, m, nnz, factors, cg_steps, positive=None):
    """Floating-point operations of one half-iteration of the CG solver (multiply-add = 2).

    As ``backends.numba_cpu._cg_solve`` (and implicit's CG) does it, per half-iteration:

    - Gram ``Y^T Y`` of the m x f fixed factors: ``2 m f^2``;
    - right-hand sides ``b = sum_{c>0} c y``: ``2 f`` per positive entry;
    - the residual ``A x`` and then one ``A p`` per CG step, ``s + 1`` products in all, each
      ``2 f^2`` per row (``YtY v``) plus ``4 f`` per entry (``y . v``, then ``+= w y``);
    - vector updates per row and step (``p . Ap``, ``x +=``, ``r -=``, ``r . r``,
      ``p = r + beta p``): ``10 f``.

    Rows that stop early (``r . r < 1e-20``) do less, so this is the most an iteration does.
    """
    positive = nnz if positive is None else positive
    return (
        2 * m * factors**2
        + 2 * positive * factors
        + (cg_steps + 1) * (2 * n * factors**2 + 4 * nnz * factors)
        + 10 * cg_steps * n * factors
    )


def iteration_flops(n_users, n_items, nnz, factors, cg_steps, positive=None):
    """FLOPs of one full iteration: both half-iterations (see ``half_iteration_flops``)."""
    return half_iteration_flops(
        n_users, n_items, nnz, factors, cg_steps, positive
    ) + half_iteration_flops(n_items, n_users, nnz, factors, cg_steps, positive)


# -- where and with what ----------------------------------------------------------------------


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info():
    """Host name, CPU, core count, memory and Python version."""
    info = {
        "node": platform.node(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(ImportError):
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def machine_slug():
    """The host name made safe for a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", platform.node() or "machine").strip("-")


def versions():
    """Versions of the libraries that decide the timings (absent ones left out)."""
    found = {}
    for name in ("numpy", "scipy", "numba", "implicit", "cupy"):
        with contextlib.suppress(Exception):
            found[name] = __import__(name).__version__
    found["blas"] = blas_info()
    return found


def blas_info():
    """Every BLAS loaded (NumPy's, SciPy's) with its kernel, as threadpoolctl reports them,
    and ``OPENBLAS_CORETYPE`` (None when unset), which picks OpenBLAS's kernel."""
    import numpy.linalg  # noqa: F401
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    keys = ("internal_api", "version", "architecture", "filepath")
    return {
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "libraries": [
            {key: info.get(key) for key in keys}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ],
    }


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
