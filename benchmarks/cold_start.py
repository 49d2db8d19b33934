"""Cold and cached first fit + first query, with Numba's compile events, in fresh processes.

Usage::

    python -m benchmarks.cold_start [--old DIR] [--repeats 3] [--out benchmarks/results]

Each run is a fresh Python process with its own ``NUMBA_CACHE_DIR``: the first (cold)
compiles everything, the second (cached) loads it. The process imports ``als``, fits a tiny
model (500 x 300, 5% dense, 16 factors, 2 iterations) and asks for ``recommend`` once,
printing wall and CPU seconds of each step and the compile events longer than 0.2 s
(``numba.core.event``, nested events included in their parents). With ``--old DIR`` (a
checkout, e.g. ``git worktree add /tmp/old <commit>``) the two checkouts take turns, so a
busy machine slows both alike; CPU seconds move less with the load than wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, machine_info, machine_slug, run_probe, utc_now, versions

PROBE = r"""
import json, time
wall, cpu = time.perf_counter, time.process_time
w0, c0 = wall(), cpu()
from numba.core.event import install_recorder
import numpy as np, scipy.sparse as sp
import als
w1, c1 = wall(), cpu()
m = sp.random(500, 300, density=0.05, format="csr", random_state=0, dtype=np.float32)
with install_recorder("numba:compile") as recorder:
    model = als.AlternatingLeastSquares(factors=16, iterations=2, random_state=0)
    model.fit(m, show_progress=False)
    w2, c2 = wall(), cpu()
    model.recommend(np.arange(10), m[:10], N=5)
    w3, c3 = wall(), cpu()
starts, events = {}, []
for stamp, event in recorder.buffer:
    key = (id(event.data["dispatcher"]), str(event.data["args"]))
    if event.is_start:
        starts[key] = stamp
    elif stamp - starts[key] > 0.2:
        function = event.data["dispatcher"].py_func
        events.append([f"{function.__module__}.{function.__name__}", stamp - starts[key]])
print(json.dumps({
    "import_wall_s": w1 - w0, "fit_wall_s": w2 - w1, "query_wall_s": w3 - w2,
    "import_cpu_s": c1 - c0, "fit_cpu_s": c2 - c1, "query_cpu_s": c3 - c2,
    "compile_events_s": events,
}))
"""


def probe(checkout, cache):
    return json.loads(run_probe(PROBE, checkout=checkout, NUMBA_CACHE_DIR=cache))


def summary(runs):
    keys = [key for key in runs[0] if key.endswith("_s") and key != "compile_events_s"]
    medians = {key: statistics.median(run[key] for run in runs) for key in keys}
    medians["fit_plus_query_wall_s"] = statistics.median(
        run["fit_wall_s"] + run["query_wall_s"] for run in runs
    )
    medians["fit_plus_query_cpu_s"] = statistics.median(
        run["fit_cpu_s"] + run["query_cpu_s"] for run in runs
    )
    return medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, help="a checkout to compare with")
    parser.add_argument("--new", type=Path, default=ROOT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=None, help="a folder for the JSON, or a .json file"
    )
    parser.add_argument("--tag", default="")
    parser.add_argument("--also-running", default="unknown", help="recorded as given")
    args = parser.parse_args(argv)
    checkouts = {"new": args.new, **({"old": args.old} if args.old else {})}
    runs = {name: {"cold": [], "cached": []} for name in checkouts}
    load_before = os.getloadavg()
    for repeat in range(args.repeats):
        names = list(checkouts) if repeat % 2 == 0 else list(checkouts)[::-1]
        for name in names:
            with tempfile.TemporaryDirectory() as cache:
                runs[name]["cold"].append(probe(checkouts[name], cache))
                runs[name]["cached"].append(probe(checkouts[name], cache))
    report = {
        "when": utc_now(),
        "command": "python -m benchmarks.cold_start " + " ".join(argv or sys.argv[1:]),
        "machine": machine_info(),
        "versions": versions(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "also_running": args.also_running,
        "median": {
            name: {state: summary(values) for state, values in states.items()}
            for name, states in runs.items()
        },
        "runs": runs,
    }
    print(json.dumps(report["median"], indent=2))
    for name in runs:
        print(name, "cold compile events (first run):")
        for function, seconds in runs[name]["cold"][0]["compile_events_s"]:
            print(f"  {seconds:6.2f} {function}")
    if args.out:
        path = args.out
        if path.suffix != ".json":
            stem = f"cold-start-{machine_slug()}-{report['when'][:10]}"
            stem += f"-{args.tag}" if args.tag else ""
            path = path / f"{stem}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
