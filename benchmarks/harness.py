"""The harness every benchmark entry point runs on.

It holds what the entry points (``fit``, ``queries``, ``quality``, ``distributed``,
``gpu_bench``) share, so that all of them build the same matrices, construct the engines
with the same parameters and seed, time them the same way and write one result schema:

- data sets: MovieLens and Last.fm from ``$ALS_DATA_DIR`` (never downloaded), synthetic
  power-law matrices generated once and cached;
- engines: ``als-cpu`` (Numba), ``als-cuda`` (CuPy), ``implicit-cpu`` and ``implicit-gpu``
  (implicit 0.7's classes), with the same ``factors``, ``regularization``, ``alpha``,
  ``cg_steps`` and ``random_state``; implicit under ``threadpool_limits(1, "blas")`` as its
  documentation asks;
- engines taking turns (:func:`take_turns`): on a shared machine a slow spell then falls on
  every engine alike;
- provenance (:func:`provenance`): machine, library versions, every BLAS threadpoolctl sees
  with its kernel, ``OPENBLAS_CORETYPE`` (which picks OpenBLAS's kernel), the load average;
- the result (:class:`Result`): one JSON schema, rendered to markdown and a chart.

The result schema, one JSON file per run with ``.md`` (and ``.png``) beside it::

    benchmark     the entry point and mode, e.g. "fit grid"
    title         one line saying what was measured
    command       the command line that made it
    date          ISO 8601, UTC
    provenance    {machine, versions, blas, load_average: {start, end}}
    params        the settings every measurement shares
    notes         [text]: method and caveats the tables need
    tables        [{kind, title, columns: [[field, heading, format], ...], where}]
    chart         {kind, x, y, series, panels, xlog, ylog, ylabel} or null
    measurements  [{kind, ...fields}]: one entry per thing measured
    skipped       [{what, why}]

A table shows the measurements of its ``kind`` (and, with ``where``, only those whose
fields hold the values it names), one row each; ``format`` is a
``str.format`` template (``"{:.4f}"``). The chart draws ``y`` against ``x`` for the
measurements of its ``kind``, one line per value of ``series``, one panel per value of
``panels``. A new entry point builds measurements and says which columns to show: the
rendering is this module's.
"""

from __future__ import annotations

import contextlib
import datetime
import json
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

#: result files go to RESULTS / <entry point>
RESULTS = ROOT / "benchmarks" / "results"

ENGINES = ("als-cpu", "als-cuda", "implicit-cpu", "implicit-gpu")

#: the parameters every engine shares, unless a benchmark says otherwise
DEFAULTS = {"regularization": 0.01, "alpha": 1.0, "cg_steps": 3, "seed": 0, "threads": 0}

#: synthetic power-law data sets: name -> (users, items, non-zeros); about 100 ratings per
#: user, density falling with size as it does from MovieLens-1M to MovieLens-20M, and one
#: wide catalogue (30,000 items) for the queries
SYNTHETIC = {
    "synthetic-1m": (10_000, 4_000, 1_000_000),
    "synthetic-10m": (100_000, 20_000, 10_000_000),
    "synthetic-50m": (500_000, 50_000, 50_000_000),
    "synthetic-30k-items": (20_000, 30_000, 1_000_000),
}

#: real data sets, by the name ``als.data.load`` knows them
REAL = ("ml-100k", "ml-1m", "lastfm-2k")

#: bumped whenever ``power_law_matrix`` changes, so cached matrices are regenerated
GENERATOR_VERSION = 2

#: agreement with implicit on the 2,000 x 1,000 power-law matrix, as tests/test_agreement.py
FACTOR_TOLERANCE = 1e-2


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
        keys = sorted_unique(np.concatenate([keys, users.astype(np.int64) * n_items + items]))
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


def sorted_unique(values):
    """``np.unique`` for a 1-D array by sorting: NumPy 2.4's is ten times slower on 10M+."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def dataset_names():
    """Every data set a benchmark may name."""
    return [*REAL, *SYNTHETIC]


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
        path = CACHE_DIR / f"{name}-seed0-v{GENERATOR_VERSION}.npz"
        if path.exists():
            return scipy.sparse.load_npz(path).tocsr()
        matrix = power_law_matrix(*SYNTHETIC[name], seed=0)
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


def sample_ids(count, size, seed=0):
    """``size`` distinct ids below ``count`` (all of them when there are fewer), sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, min(size, count), replace=False))


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


# -- timing -----------------------------------------------------------------------------------


def take_turns(names, rounds, run):
    """``{name: [run(name) for each round]}``, the names taking turns in alternating order.

    The first round runs ``names`` in order, the second in reverse, and so on, so that
    neither a machine's slow spell nor its warming up favours one of them.
    """
    results = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            results[name].append(run(name))
    return results


def seconds_per_iteration(make, user_items, iterations, sync=None):
    """Every timed iteration's seconds, after a warm-up fit of one iteration.

    ``make(n)`` returns an untrained model of ``n`` iterations. A model of ``iterations + 1``
    iterations is fitted; every iteration's end is stamped in the fit callback after
    ``sync()`` (device work finished), and the differences between stamps are the
    iteration times. The first iteration, which also carries per-fit set-up (transpose,
    copies to the device), is left out.

    Returns
    -------
    times_s, warmup_s, model
        Every timed iteration, the wall time of the warm-up fit (first call: Numba's compile
        or cache load, CUDA module loading, plus one iteration and set-up), the fitted model.
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

    model = make(iterations + 1)
    model.fit(user_items, show_progress=False, callback=stamp)
    return [float(t) for t in np.diff(stamps)], warmup_s, model


def timed(call, sync=None):
    """(seconds, result) of one call, waiting for device work with ``sync``."""
    start = time.perf_counter()
    result = call()
    if sync:
        sync()
    return time.perf_counter() - start, result


def median(values):
    """The median of a non-empty sequence as a float (None for an empty one)."""
    values = list(values)
    return float(statistics.median(values)) if values else None


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


# -- provenance -------------------------------------------------------------------------------


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
    """A short name of the machine for result files: ``<host>-<cores>cpu``."""
    node = re.sub(r"[^A-Za-z0-9_.-]+", "-", platform.node() or "machine").strip("-")
    return f"{node}-{os.cpu_count()}cpu"


def versions():
    """Versions of the libraries that decide the timings (absent ones left out)."""
    found = {}
    for name in ("numpy", "scipy", "numba", "implicit", "cupy", "dask"):
        with contextlib.suppress(Exception):
            found[name] = __import__(name).__version__
    return found


def blas_info():
    """Every BLAS loaded (NumPy's, SciPy's) with its kernel, as threadpoolctl reports them,
    and ``OPENBLAS_CORETYPE`` (None when unset), which picks OpenBLAS's kernel."""
    info = {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "libraries": []}
    try:
        import numpy.linalg  # noqa: F401
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import threadpool_info
    except ImportError as exc:  # the device machine may lack threadpoolctl: say so
        info["libraries"] = f"not recorded: {exc}"
        return info
    keys = ("internal_api", "version", "architecture", "threading_layer", "filepath")
    info["libraries"] = [
        {key: entry.get(key) for key in keys}
        for entry in threadpool_info()
        if entry.get("user_api") == "blas"
    ]
    return info


def provenance():
    """Machine, versions, BLAS and the load average now (``start``; see :meth:`Result.save`)."""
    return {
        "machine": machine_info(),
        "versions": versions(),
        "blas": blas_info(),
        "load_average": {"start": load_average(), "end": None},
    }


def load_average():
    """The 1, 5 and 15-minute load averages: how busy the machine was."""
    return [round(value, 2) for value in os.getloadavg()]


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def argument_parser(entry_point, doc):
    """The parser of ``python -m benchmarks.<entry point>``: the docstring's first paragraph
    as its description, the rest (usage, modes) after the options."""
    import argparse

    first, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks.{entry_point}",
        description=first,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=rest,
    )


def command_line(entry_point, argv):
    """The command as typed: ``python -m benchmarks.<entry point> args...``."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m benchmarks." + entry_point, *map(str, argv)])


# -- the result -------------------------------------------------------------------------------


class Result:
    """One run's result in the schema of the module docstring; ``save`` writes it.

    Parameters
    ----------
    benchmark, title, command
        The entry point (and mode), one line saying what was measured, the command line.
    params
        The settings every measurement shares.
    path
        The result file's path without suffix, or None to write nothing.
    tables, chart, notes
        How to render the measurements (see the module docstring).
    """

    def __init__(self, benchmark, title, command, params, path, tables=(), chart=None, notes=()):
        self.path = None if path is None else Path(path)
        self.data = {
            "benchmark": benchmark,
            "title": title,
            "command": command,
            "date": utc_now(),
            "provenance": provenance(),
            "params": params,
            "notes": list(notes),
            "tables": list(tables),
            "chart": chart,
            "measurements": [],
            "skipped": [],
        }

    @property
    def measurements(self):
        return self.data["measurements"]

    def add(self, kind, **fields):
        """Record one measurement, print it, and save the file (a run cut short keeps it)."""
        entry = {"kind": kind, **fields}
        self.measurements.append(entry)
        shown = {k: v for k, v in entry.items() if not isinstance(v, (list, dict))}
        print(json.dumps(shown, default=float), flush=True)
        self.save(render=False)
        return entry

    def skip(self, what, why):
        self.data["skipped"].append({"what": what, "why": why})
        print(f"skipped {what}: {why}", flush=True)
        self.save(render=False)

    def save(self, render=True):
        """Write ``path.json`` (whole, through a temporary file); with ``render`` also
        ``path.md`` and, where a chart is asked for and matplotlib imports, ``path.png``."""
        if self.path is None:
            return
        self.data["provenance"]["load_average"]["end"] = load_average()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path.with_suffix(".json"), self.data)
        if render:
            chart = draw_chart(self.data, self.path.with_suffix(".png"))
            text = markdown(self.data, chart_file=chart and self.path.with_suffix(".png").name)
            self.path.with_suffix(".md").write_text(text)
            print(f"wrote {self.path}.json, .md" + (" and .png" if chart else ""))

    def finish(self):
        """Save the result (JSON, markdown, chart), or print its markdown when it has no path
        (``--no-save``); return its data."""
        if self.path is None:
            print(markdown(self.data))
        self.save()
        return self.data


def write_json(path, data):
    temporary = Path(f"{path}.tmp")
    temporary.write_text(json.dumps(data, indent=1, default=float) + "\n")
    os.replace(temporary, path)


def result_path(out, entry_point, name):
    """``out/<name>-<machine>``, ``out`` defaulting to ``results/<entry point>``."""
    folder = Path(out) if out else RESULTS / entry_point
    return folder / f"{name}-{machine_slug()}"


def cell(value, template):
    """One table cell: ``template.format(value)``, a dash for a missing value."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    try:
        return template.format(value)
    except (TypeError, ValueError):
        return str(value)


def table_lines(result, table):
    """A markdown table of the measurements of ``table["kind"]``."""
    where = table.get("where") or {}
    rows = [
        m
        for m in result["measurements"]
        if m["kind"] == table["kind"] and all(m.get(k) == v for k, v in where.items())
    ]
    if not rows:
        return []
    # a column no row fills (GPU memory on a CPU run) is left out
    columns = [c for c in table["columns"] if any(row.get(c[0]) is not None for row in rows)]
    align = [":---" if ":" not in template else "---:" for _, _, template in columns]
    lines = [f"## {table['title']}", ""] if table.get("title") else []
    lines += ["| " + " | ".join(heading for _, heading, _ in columns) + " |"]
    lines += ["|" + "|".join(align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(f), t) for f, _, t in columns) + " |")
    return [*lines, ""]


def blas_line(blas):
    """``OPENBLAS_CORETYPE`` and each loaded BLAS's kernel, in words."""
    libraries = blas.get("libraries")
    if isinstance(libraries, list):
        libraries = "; ".join(
            f"{lib.get('internal_api')} {lib.get('version')} kernel {lib.get('architecture')}"
            for lib in libraries
        )
    return f"OPENBLAS_CORETYPE={blas.get('OPENBLAS_CORETYPE') or 'unset'}; {libraries}"


def markdown(result, chart_file=None):
    """The result as markdown: what, where and with what, notes, one table per kind."""
    found = result["provenance"]
    machine, load = found["machine"], found.get("load_average") or {}
    memory = f", {machine['memory_gib']} GiB" if "memory_gib" in machine else ""
    lines = [
        f"# {result['title']}",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}; machine: {machine.get('node')}, {machine.get('processor')}, "
        f"{machine.get('cpu_count')} cores{memory}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in found["versions"].items()),
        f"- BLAS: {blas_line(found['blas'])}",
    ]
    if found.get("device"):
        lines.append("- device: " + ", ".join(f"{k} {v}" for k, v in found["device"].items()))
    if load.get("start"):
        lines.append(f"- load average (1, 5, 15 min) at start {load['start']}, end {load['end']}")
    params = ", ".join(f"{k} {v}" for k, v in result["params"].items())
    lines += [f"- parameters: {params}", ""]
    lines += [*(f"{note}\n" for note in result["notes"])]
    for table in result["tables"]:
        lines += table_lines(result, table)
    for skipped in result["skipped"]:
        lines.append(f"- not measured: {skipped['what']} ({skipped['why']})")
    if chart_file:
        lines += ["", f"![{result['title']}]({chart_file})"]
    return "\n".join(lines).rstrip() + "\n"


def draw_chart(result, path):
    """Draw ``result["chart"]`` to ``path``; False when there is none or nothing to draw."""
    spec = result.get("chart")
    rows = spec and [m for m in result["measurements"] if m["kind"] == spec["kind"]]
    rows = rows and [m for m in rows if m.get(spec["y"]) is not None]
    if not rows:
        return False
    try:
        import matplotlib
    except ImportError:
        print("no chart: matplotlib is not installed", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    panels = list(dict.fromkeys(m.get(spec.get("panels")) for m in rows))
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        mine = [m for m in rows if m.get(spec.get("panels")) == panel]
        for series in dict.fromkeys(m.get(spec["series"]) for m in mine):
            points = sorted(
                (m[spec["x"]], m[spec["y"]]) for m in mine if m.get(spec["series"]) == series
            )
            axis.plot(*zip(*points, strict=True), "o-", markersize=3, label=str(series))
        axis.set(xlabel=spec.get("xlabel", spec["x"]), ylabel=spec.get("ylabel", spec["y"]))
        if spec.get("xlog"):
            axis.set_xscale("log", base=2 if spec["x"] == "factors" else 10)
            values = sorted({m[spec["x"]] for m in mine})
            if all(isinstance(value, int) for value in values):  # factor counts, as numbers
                axis.set_xticks(values, [str(value) for value in values], minor=False)
                axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if spec.get("ylog"):
            axis.set_yscale("log")
        axis.set_title(str(panel) if panel is not None else "", fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    machine = result["provenance"]["machine"]
    figure.suptitle(
        f"{result['title']}: {machine.get('processor')}, {machine.get('cpu_count')} cores",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def render(path):
    """Write the markdown (and chart) of a saved result JSON again, beside it."""
    path = Path(path)
    data = json.loads(path.with_suffix(".json").read_text())
    chart = draw_chart(data, path.with_suffix(".png"))
    text = markdown(data, chart_file=chart and path.with_suffix(".png").name)
    path.with_suffix(".md").write_text(text)
    print(f"wrote {path.with_suffix('.md')}" + (" and .png" if chart else ""))
