"""als against implicit on CPU and GPU: seconds per iteration, GFLOP/s, memory, queries.

Usage::

    python -m benchmarks.compare --grid quick|default|full [--engines als-cpu implicit-cpu]
        [--factors 32 64] [--datasets ml-1m synthetic-1m] [--out benchmarks/results]

For every data set x factors x engine of the grid, a fresh subprocess loads the matrix,
fits once (1 iteration, untimed here: Numba compile or cache load, CUDA module loading),
then fits ``iterations + 1`` iterations and takes the median of the last ``iterations``
(see ``benchmarks.common.seconds_per_iteration``), then times ``recommend`` for 1,000 users
and ``similar_items`` for 1,000 items (median of ``QUERY_REPEATS`` calls after a warm-up
call). Its peak resident memory (``ru_maxrss``) is that of the whole process: Python,
libraries, the matrix and the fit.
Before any timing, each als engine must reproduce implicit's factors on a small matrix.

Writes ``OUT/<machine>-<date>.json``, ``.md`` (tables, formula, versions) and ``.png``
(seconds per iteration against non-zeros and against factors, one line per engine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import (
    DEFAULTS,
    ENGINES,
    FLOP_FORMULA,
    ROOT,
    DatasetMissing,
    agreement_error,
    compile_times,
    dataset_names,
    engine_context,
    engine_unavailable,
    iteration_flops,
    load_dataset,
    machine_info,
    machine_slug,
    make_model,
    seconds_per_iteration,
    synchronizer,
    utc_now,
    versions,
)

GRIDS = {
    "quick": {"datasets": ["ml-100k", "synthetic-1m"], "factors": [32, 64], "iterations": 3},
    "default": {
        "datasets": ["ml-100k", "ml-1m", "lastfm-2k", "synthetic-1m", "synthetic-10m"],
        "factors": [32, 64, 128],
        "iterations": 5,
    },
    "full": {"datasets": dataset_names(), "factors": [32, 64, 128, 256], "iterations": 5},
    # issue 14's grid: factor counts up to 512 (synthetic 10M on request: --datasets)
    "wide": {
        "datasets": ["ml-1m", "lastfm-2k", "synthetic-1m"],
        "factors": [32, 64, 128, 256, 512],
        "iterations": 3,
    },
}
QUERIES = 1000

#: timed calls of each query, after a warm-up call: a median of 9 calls of a few tens of
#: milliseconds each rides out the short slow spells of a shared machine that 3 did not
QUERY_REPEATS = 9
N = 10
MiB = 2**20


# -- one configuration, in its own process ----------------------------------------------------


def _memory_mib():
    """(current, peak) resident memory of this process in MiB.

    The peak is ``VmHWM`` from /proc: ``getrusage``'s ``ru_maxrss`` would do on macOS, but on
    Linux a child starts with its parent's high-water mark (it survives fork and exec), so
    every configuration would report at least the runner's own peak.
    """
    fields = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB
    if len(fields) == 2:
        return fields["VmRSS"], fields["VmHWM"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float("nan"), peak / (MiB if sys.platform == "darwin" else 1024)


def _median_time(call, sync, repeats=QUERY_REPEATS):
    call()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_worker(spec):
    """Measure one (engine, data set, factors); return a dict of results."""
    import scipy.sparse

    warnings.filterwarnings("ignore", message=".*BLAS.*thread.*", category=RuntimeWarning)
    engine, factors = spec["engine"], spec["factors"]
    user_items = scipy.sparse.load_npz(spec["path"]).tocsr()
    n_users, n_items = user_items.shape
    rss_loaded, _ = _memory_mib()
    sync = synchronizer(engine)
    models = []

    def make(iterations):
        models.append(make_model(engine, factors, iterations, **spec["params"]))
        return models[-1]

    with engine_context(engine):
        median, times, warmup_s = seconds_per_iteration(
            make, user_items, spec["iterations"], sync=sync
        )
        model = models[-1]
        rng = np.random.default_rng(0)
        users = np.sort(rng.choice(n_users, min(QUERIES, n_users), replace=False))
        items = np.sort(rng.choice(n_items, min(QUERIES, n_items), replace=False))
        liked = user_items[users]
        recommend_s, (ids, _) = _median_time(
            lambda: model.recommend(users, liked, N=N, filter_already_liked_items=True), sync
        )
        similar_s, (similar_ids, _) = _median_time(lambda: model.similar_items(items, N=N), sync)
    problems = []
    if not ((ids >= 0) & (ids < n_items)).all() or ids.shape != (len(users), N):
        problems.append("recommend returned invalid ids")
    if np.mean(similar_ids[:, 0] == items) < 0.99:
        problems.append("similar_items: items are not their own nearest neighbour")
    result = {
        "s_per_iter": median,
        "iteration_times": times,
        "warmup_fit_s": warmup_s,
        "recommend_s": recommend_s,
        "similar_items_s": similar_s,
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": _memory_mib()[1],
        "problems": problems,
    }
    if engine == "als-cuda":
        import cupy

        result["gpu_pool_mib"] = cupy.get_default_memory_pool().total_bytes() / MiB
    return result


def measure(spec, timeout):
    """Run ``run_worker(spec)`` in a fresh interpreter; return its results or the error."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "benchmarks.compare", "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"took longer than {timeout} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit status {done.returncode}: " + " | ".join(tail)}


# -- the grid ---------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--grid", choices=sorted(GRIDS), default="default")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--factors", nargs="+", type=int, help="override the grid's factors")
    parser.add_argument("--datasets", nargs="+", help="override the grid's data sets")
    parser.add_argument("--iterations", type=int, help="timed iterations per fit")
    parser.add_argument("--cg-steps", type=int, default=DEFAULTS["cg_steps"])
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"], help="0 = all")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure every configuration this many times, engines taking turns, and report "
        "the median (shared machines are noisy)",
    )
    parser.add_argument("--no-compile-probe", action="store_true", help="skip Numba cold start")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="", help="added to the result files' names")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return None
    from tqdm.auto import tqdm

    grid = GRIDS[args.grid]
    datasets = args.datasets or grid["datasets"]
    factors_list = args.factors or grid["factors"]
    iterations = args.iterations or grid["iterations"]
    params = {**DEFAULTS, "cg_steps": args.cg_steps, "threads": args.threads}

    engines = {engine: engine_unavailable(engine) for engine in args.engines}
    for engine, reason in engines.items():
        if reason:
            print(f"skipping {engine}: {reason}")
    runnable = [engine for engine, reason in engines.items() if reason is None]
    agreement = {}
    for engine in runnable:
        if engine.startswith("als-") and engines.get("implicit-cpu", "x") is None:
            agreement[engine] = agreement_error(engine) or "ok"
            if agreement[engine] != "ok":
                print(f"not timing {engine}, wrong answers: {agreement[engine]}")
    timed = [e for e in runnable if agreement.get(e, "ok") == "ok"]

    report_rows, shapes = [], {}
    with tempfile.TemporaryDirectory(prefix="als-bench-") as folder:
        paths = {}
        for name in tqdm(datasets, desc="data sets", leave=False):
            try:
                matrix = load_dataset(name)
            except DatasetMissing as exc:
                print(f"skipping {name}: {exc}")
                continue
            import scipy.sparse

            paths[name] = Path(folder) / f"{name}.npz"
            scipy.sparse.save_npz(paths[name], matrix, compressed=False)
            shapes[name] = {"users": matrix.shape[0], "items": matrix.shape[1], "nnz": matrix.nnz}
            del matrix
        # engines take turns within each repeat, so a slow spell of the machine is shared
        configs = [
            (d, f, r, e)
            for d in paths
            for f in factors_list
            for r in range(args.repeats)
            for e in timed
        ]
        runs = {}
        bar = tqdm(configs, desc="benchmarks", unit="run")
        for name, factors, repeat, engine in bar:
            bar.set_postfix_str(f"{name} f={factors} {engine} #{repeat + 1}")
            spec = {
                "engine": engine,
                "factors": factors,
                "iterations": iterations,
                "path": str(paths[name]),
                "params": params,
            }
            runs.setdefault((name, factors, engine), []).append(measure(spec, args.timeout))
        for (name, factors, engine), measured in runs.items():
            row = {"dataset": name, **shapes[name], "factors": factors, "engine": engine}
            row.update(combine_repeats(measured))
            report_rows.append(row)
    compile_probe = None
    if "als-cpu" in timed and not args.no_compile_probe:
        print("measuring Numba's first call (cold and cached cache) ...")
        compile_probe = compile_times()
    add_derived(report_rows, args.cg_steps)

    date = utc_now()
    report = {
        "command": "python -m benchmarks.compare "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": date,
        "grid": args.grid,
        "machine": machine_info(),
        "versions": versions(),
        "params": {
            **params,
            "timed_iterations": iterations,
            "repeats": args.repeats,
            "queries": QUERIES,
            "N": N,
        },
        "flop_formula": FLOP_FORMULA,
        "datasets": shapes,
        "engines": {engine: reason or "ok" for engine, reason in engines.items()},
        "agreement_with_implicit": agreement,
        "numba_first_call": compile_probe,
        "results": report_rows,
    }
    text = markdown(report)
    print()
    print(text)
    stem = args.out / f"{machine_slug()}-{date[:10]}{'-' + args.tag if args.tag else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_chart and draw_chart(report, stem.with_suffix(".png")):
        text += f"\n![seconds per iteration]({stem.name}.png)\n"
    stem.with_suffix(".md").write_text(text)
    print(f"wrote {stem}.json, .md" + ("" if args.no_chart else " and .png"))
    return report


def combine_repeats(measured):
    """One row from repeated measurements: the first run's fields, the median s/iter and
    query times."""
    row = dict(measured[0])
    for key in ("s_per_iter", "recommend_s", "similar_items_s"):
        times = [m[key] for m in measured if key in m]
        if times:
            row[key] = float(statistics.median(times))
            row[f"{key}_runs"] = times
    return row


def add_derived(rows, cg_steps):
    """GFLOP/s, and the ratio to implicit on the same data set and factors in this run."""
    reference = {
        (row["dataset"], row["factors"], row["engine"]): row["s_per_iter"]
        for row in rows
        if "s_per_iter" in row and row["engine"].startswith("implicit-")
    }
    by_key = {(row["dataset"], row["factors"], row["engine"]): row for row in rows}
    for row in rows:
        if "s_per_iter" not in row:
            continue
        flops = iteration_flops(row["users"], row["items"], row["nnz"], row["factors"], cg_steps)
        row["gflop_per_iter"] = flops / 1e9
        row["gflops"] = flops / row["s_per_iter"] / 1e9
        for other in ("implicit-cpu", "implicit-gpu"):
            base = reference.get((row["dataset"], row["factors"], other))
            if base:
                row[f"ratio_to_{other.replace('-', '_')}"] = row["s_per_iter"] / base
        implicit = by_key.get((row["dataset"], row["factors"], "implicit-cpu"), {})
        for key in ("recommend_s", "similar_items_s"):
            if implicit.get(key) and row.get(key):
                row[f"{key[:-2]}_ratio_to_implicit_cpu"] = row[key] / implicit[key]


# -- reporting --------------------------------------------------------------------------------


def _fmt(value, spec):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _table(header, rows):
    # text columns (data set, engine) left-aligned, numbers right-aligned
    align = [":---" if name in ("data set", "engine") else "---:" for name in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary_table(report):
    """Seconds per iteration, one column per engine, and als / implicit."""
    rows = report["results"]
    engines = [e for e in ENGINES if any(r["engine"] == e and "s_per_iter" in r for r in rows)]
    by_key = {(r["dataset"], r["factors"], r["engine"]): r for r in rows}
    keys = sorted(
        {(r["dataset"], r["factors"]) for r in rows},
        key=lambda k: (report["datasets"][k[0]]["nnz"], k[1]),
    )
    ratios = [
        (e, base)
        for e in engines
        if e.startswith("als-")
        for base in ("implicit-cpu", "implicit-gpu")
        if base in engines
    ]
    header = ["data set", "nnz", "factors", *[f"{e} s/iter" for e in engines]]
    header += [f"{e} ÷ {base}" for e, base in ratios]
    body = []
    for dataset, factors in keys:
        cells = [dataset, f"{report['datasets'][dataset]['nnz']:,}", str(factors)]
        for engine in engines:
            cells.append(_fmt(by_key.get((dataset, factors, engine), {}).get("s_per_iter"), ".4f"))
        for engine, base in ratios:
            row = by_key.get((dataset, factors, engine), {})
            value = row.get(f"ratio_to_{base.replace('-', '_')}")
            cells.append(_fmt(value, ".2f") + ("×" if value else ""))
        body.append(cells)
    return _table(header, body)


def detail_table(report):
    """Every measurement of every configuration."""
    rows = report["results"]
    gpu = any(r["engine"] in ("als-cuda", "implicit-gpu") for r in rows)
    header = ["data set", "factors", "engine", "s/iter", "÷ implicit-cpu"]
    header += ["÷ implicit-gpu"] if gpu else []
    header += ["GFLOP/s", "warm-up fit s", "recommend 1k s", "÷ implicit-cpu", "similar 1k s"]
    header += ["÷ implicit-cpu", "peak RSS MiB"]
    header += ["GPU pool MiB"] if gpu else []
    body = []
    for r in rows:
        cells = [r["dataset"], str(r["factors"]), r["engine"]]
        if "error" in r:
            body.append(cells + [f"failed: {r['error']}"] + [""] * (len(header) - 4))
            continue
        cells += [_fmt(r["s_per_iter"], ".4f"), _fmt(r.get("ratio_to_implicit_cpu"), ".2f")]
        cells += [_fmt(r.get("ratio_to_implicit_gpu"), ".2f")] if gpu else []
        cells += [
            _fmt(r["gflops"], ".1f"),
            _fmt(r["warmup_fit_s"], ".2f"),
            _fmt(r["recommend_s"], ".4f"),
            _fmt(r.get("recommend_ratio_to_implicit_cpu"), ".2f"),
            _fmt(r["similar_items_s"], ".4f"),
            _fmt(r.get("similar_items_ratio_to_implicit_cpu"), ".2f"),
            _fmt(r["peak_rss_mib"], ",.0f"),
        ]
        cells += [_fmt(r.get("gpu_pool_mib"), ",.0f")] if gpu else []
        if r.get("problems"):
            cells[2] += " (" + "; ".join(r["problems"]) + ")"
        body.append(cells)
    return _table(header, body)


def blas_line(blas):
    """``OPENBLAS_CORETYPE`` and each loaded BLAS's kernel, in words."""
    if not blas:
        return "not recorded"
    libraries = "; ".join(
        f"{lib['internal_api']} {lib['version']} kernel {lib['architecture']}"
        for lib in blas["libraries"]
    )
    return f"OPENBLAS_CORETYPE={blas['OPENBLAS_CORETYPE'] or 'unset'}; {libraries}"


def markdown(report):
    machine = report["machine"]
    params = report["params"]
    lines = [
        f"# als vs implicit: {report['grid']} grid",
        "",
        f"- command: `{report['command']}`",
        f"- date: {report['date']}; machine: {machine['node']}, {machine['processor']}, "
        f"{machine['cpu_count']} cores"
        + (f", {machine['memory_gib']} GiB" if "memory_gib" in machine else ""),
        "- versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k != "blas"),
        f"- BLAS: {blas_line(report['versions'].get('blas'))}",
        f"- parameters (every engine): regularization {params['regularization']}, alpha "
        f"{params['alpha']}, cg_steps {params['cg_steps']}, seed {params['seed']}, threads "
        f"{params['threads'] or 'all'}; implicit under threadpool_limits(1, 'blas'); median "
        f"of {params['timed_iterations']} iterations after a warm-up fit"
        + (
            f"; median of {params['repeats']} runs, engines taking turns"
            if params.get("repeats", 1) > 1
            else ""
        ),
        f"- engines: {', '.join(f'{k}: {v}' for k, v in report['engines'].items())}",
        f"- agreement with implicit before timing: {report['agreement_with_implicit'] or '–'}",
        "",
        "## Seconds per iteration",
        "",
        *summary_table(report),
        "",
        "## Every measurement",
        "",
        *detail_table(report),
        "",
        "Columns: **s/iter** median wall seconds of one ALS iteration (users then items), "
        "after a warm-up fit; **÷ implicit-…** that time divided by implicit's on the same "
        "data and factors in this run (below 1: faster than implicit); **GFLOP/s** the FLOP "
        "count below divided by s/iter; **warm-up fit s** the first fit of one iteration in a "
        "fresh process (Numba compile or cache load, CUDA module loading, set-up, one "
        f"iteration); **recommend 1k s** / **similar 1k s** one batched call for {QUERIES:,} "
        f"users / items, N={N}, median of {QUERY_REPEATS}; **peak RSS MiB** the process's peak "
        "resident memory (Python, libraries, matrix and model); **GPU pool MiB** CuPy's memory "
        "pool after the run.",
        "",
        f"FLOPs counted: {report['flop_formula']}. A multiply-add counts 2; rows that stop "
        "CG early do less, so GFLOP/s is the rate at which the counted work is done.",
    ]
    probe = report["numba_first_call"]
    if probe:
        lines += [
            "",
            f"Numba first call (import + compile or cache load + a tiny fit and recommend, "
            f"fresh process): cold cache {probe['cold_s']:.2f} s, warm cache "
            f"{probe['cached_s']:.2f} s.",
        ]
    return "\n".join(lines) + "\n"


def draw_chart(report, path):
    """Seconds per iteration against non-zeros and against factors; False if nothing to draw."""
    rows = [r for r in report["results"] if "s_per_iter" in r]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    factors_all = sorted({r["factors"] for r in rows})
    f_ref = 64 if 64 in factors_all else factors_all[-1]
    biggest = max({r["dataset"] for r in rows}, key=lambda d: report["datasets"][d]["nnz"])
    figure, (by_nnz, by_factors) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine in [e for e in ENGINES if any(r["engine"] == e for r in rows)]:
        mine = sorted(
            (r for r in rows if r["engine"] == engine and r["factors"] == f_ref),
            key=lambda r: r["nnz"],
        )
        by_nnz.plot([r["nnz"] for r in mine], [r["s_per_iter"] for r in mine], "o-", label=engine)
        mine = sorted(
            (r for r in rows if r["engine"] == engine and r["dataset"] == biggest),
            key=lambda r: r["factors"],
        )
        by_factors.plot(
            [r["factors"] for r in mine], [r["s_per_iter"] for r in mine], "o-", label=engine
        )
    by_nnz.set(xscale="log", yscale="log", xlabel="non-zeros", ylabel="seconds per iteration")
    by_nnz.set_title(f"factors = {f_ref}")
    by_factors.set_xscale("log", base=2)
    by_factors.set(yscale="log", xlabel="factors", ylabel="seconds per iteration")
    by_factors.set_xticks(factors_all, [str(f) for f in factors_all])
    by_factors.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    by_factors.set_title(f"{biggest} ({report['datasets'][biggest]['nnz']:,} non-zeros)")
    for axes in (by_nnz, by_factors):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    machine = report["machine"]
    figure.suptitle(
        f"ALS fit, cg_steps={report['params']['cg_steps']}: {machine['processor']}, "
        f"{machine['cpu_count']} cores ({report['date'][:10]})",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


if __name__ == "__main__":
    main()
