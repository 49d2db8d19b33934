"""Approximate queries (``als.ann``) against our exact ones and implicit's wrappers, same factors.

Usage::

    python -m benchmarks.approximate [--datasets lastfm-2k synthetic-1m-items]
        [--factors 64 128] [--libraries faiss nmslib annoy] [--queries 10000]
        [--out benchmarks/results/approximate]

For each data set and factor count one set of factors is made: lastfm-2k's by fitting our
model (15 iterations, seed 0, play counts as confidences); the one-million-item catalogue's
drawn from a mixture (1,000 Gaussian taste clusters, item norms log-normal, as fitted item
norms grow with popularity; users drawn near the same clusters; 20 random liked items each),
because fitting a million items is not what is measured. Both engines index those factors:
ours through ``als.ann.<Library>Model``, implicit's through ``implicit.ann.<library>`` over
an implicit model holding the same arrays. Every timing runs the engines in turn (ours,
implicit's, then exact) so a slow spell of a shared machine hits them alike; the best of
``--rounds`` counts.

Measured: index build seconds (both indexes, on the first query for ours); recall@10 of
``recommend`` (liked items filtered) and ``similar_items`` against our exact top 10 on 1,000
queries; queries per second for ``--queries`` calls batched (one call) and one at a time.
Exact queries on a million items are slow on a small machine: ``--exact-sample`` of them
are timed and the rate reported as measured (the JSON says how many). Writes
``approximate-queries-<data sets>[-<label>]-<machine>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import scipy.sparse

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("ALS_DATA_DIR", ROOT.parent / "shared" / "data"))
LIBRARIES = ("faiss", "nmslib", "annoy")
K = 10
RECALL_QUERIES = 1000


# -- factors ------------------------------------------------------------------------------------


def synthetic_factors(factors, n_items=1_000_000, n_users=100_000, clusters=1000, seed=0):
    """Clustered factors with popularity-like norms, and 20 random liked items per user."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, factors)).astype(np.float32)
    item_cluster = rng.integers(clusters, size=n_items)
    items = centers[item_cluster] + 0.7 * rng.normal(size=(n_items, factors)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items *= rng.lognormal(0.0, 0.5, size=(n_items, 1)).astype(np.float32)
    user_cluster = rng.integers(clusters, size=n_users)
    users = centers[user_cluster] + 0.7 * rng.normal(size=(n_users, factors)).astype(np.float32)
    liked = rng.integers(n_items, size=(n_users, 20))
    rows = np.repeat(np.arange(n_users), 20)
    user_items = scipy.sparse.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, liked.ravel())), shape=(n_users, n_items)
    )
    user_items.sum_duplicates()
    user_items.data[:] = 1
    return users.astype(np.float32), items.astype(np.float32), user_items


def lastfm_factors(factors):
    """Our model fitted on lastfm-2k (play counts as confidences), and its interactions."""
    os.environ.setdefault("ALS_DATA_DIR", str(DATA_DIR))
    from als import AlternatingLeastSquares
    from als.data import load

    user_items = load("lastfm-2k", download=False).user_items.astype(np.float32).tocsr()
    model = AlternatingLeastSquares(factors=factors, iterations=15, random_state=0, backend="cpu")
    model.fit(user_items, show_progress=False)
    return model.user_factors, model.item_factors, user_items


def make_factors(dataset, factors):
    if dataset == "synthetic-1m-items":
        return synthetic_factors(factors)
    if dataset == "lastfm-2k":
        return lastfm_factors(factors)
    raise ValueError(f"unknown data set {dataset!r}")


# -- engines -------------------------------------------------------------------------------------


def ours(library, users, items, settings):
    from als import AlternatingLeastSquares
    from als.ann import AnnoyModel, FaissModel, NMSLibModel

    model = AlternatingLeastSquares(factors=users.shape[1], backend="cpu")
    model.user_factors, model.item_factors = users, items
    wrapper = {"faiss": FaissModel, "nmslib": NMSLibModel, "annoy": AnnoyModel}[library]
    return model, wrapper(model, **settings)


def theirs(library, users, items, settings):
    """implicit's wrapper over an implicit model holding the same factors (fit only indexes)."""
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS

    model = ImplicitALS(factors=users.shape[1])
    model.user_factors, model.item_factors = users, items
    model.fit = lambda *args, **kwargs: None
    if library == "faiss":
        from implicit.ann.faiss import FaissModel as Wrapper

        settings = {**settings, "use_gpu": False}
    elif library == "nmslib":
        from implicit.ann.nmslib import NMSLibModel as Wrapper
    else:
        from implicit.ann.annoy import AnnoyModel as Wrapper
    wrapper = Wrapper(model, **settings)
    start = time.perf_counter()
    wrapper.fit(None, show_progress=False)
    return wrapper, time.perf_counter() - start


# -- measurements --------------------------------------------------------------------------------


def recall(found, exact):
    hits = [
        len(set(a) & set(b) - {-1}) / max(len(set(b) - {-1}), 1)
        for a, b in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits))


def _seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def query_calls(engine, users, user_items, items, batched, rows):
    """Callables for recommend and similar_items on ``rows`` (one call, or one per row)."""
    if batched:
        return (
            lambda: engine.recommend(users[rows], user_items[users[rows]], N=K),
            lambda: engine.similar_items(items[rows], N=K),
        )

    def recommend():
        for user in users[rows]:
            engine.recommend(user, user_items[user], N=K)

    def similar():
        for item in items[rows]:
            engine.similar_items(item, N=K)

    return recommend, similar


KINDS = ("recommend_batched", "similar_items_batched", "recommend_single", "similar_items_single")

#: implicit's defaults, the settings both engines get unless ``--settings`` says otherwise
DEFAULT_SETTINGS = {"faiss": {"nlist": 400, "nprobe": 20}, "nmslib": {}, "annoy": {}}


def measure(dataset, factors, libraries, settings, args):
    """Build every engine on one set of factors, check recall, then time them in turns."""
    users_f, items_f, user_items = make_factors(dataset, factors)
    rng = np.random.default_rng(1)
    users = rng.integers(len(users_f), size=args.queries)
    items = rng.integers(len(items_f), size=args.queries)
    exact, _ = ours(libraries[0], users_f, items_f, {})
    sample = np.arange(RECALL_QUERIES)
    truth = (
        exact.recommend(users[sample], user_items[users[sample]], N=K)[0],
        exact.similar_items(items[sample], N=K)[0],
    )
    result = {"dataset": dataset, "factors": factors, "items": len(items_f), "engines": {}}
    engines = {"exact": exact}
    for library in libraries:
        _, our = ours(library, users_f, items_f, settings[library])
        start = time.perf_counter()
        our.recommend(users[:1], user_items[users[:1]], N=K)
        our.similar_items(items[:1], N=K)
        our_build = time.perf_counter() - start
        their, their_build = theirs(library, users_f, items_f, settings[library])
        for name, engine, build in (("als", our, our_build), ("implicit", their, their_build)):
            found = (
                engine.recommend(users[sample], user_items[users[sample]], N=K)[0],
                engine.similar_items(items[sample], N=K)[0],
            )
            result["engines"][f"{name}-{library}"] = {
                "build_seconds": build,
                "recall_recommend": recall(found[0], truth[0]),
                "recall_similar_items": recall(found[1], truth[1]),
                "settings": settings[library],
            }
            engines[f"{name}-{library}"] = engine
    result["engines"]["exact"] = {}
    counts = {
        "batched": min(args.exact_sample, args.queries),
        "single": min(args.single, args.exact_sample, args.queries),
    }
    result["queries_timed"] = {
        "exact": counts,
        "approximate": {"batched": args.queries, "single": min(args.single, args.queries)},
    }
    for kind, qps in take_turns(engines, users, user_items, items, args).items():
        result["engines"][kind[0]][f"{kind[1]}_qps"] = qps
    return result


def take_turns(engines, users, user_items, items, args):
    """Queries per second of every engine and query kind, the engines timed in turn."""
    calls = {}
    for name, engine in engines.items():
        batch = args.queries if name != "exact" else min(args.exact_sample, args.queries)
        single = min(args.single, batch)
        recommend, similar = query_calls(engine, users, user_items, items, True, np.arange(batch))
        recommend_one, similar_one = query_calls(
            engine, users, user_items, items, False, np.arange(single)
        )
        calls[name] = dict(
            zip(
                KINDS,
                (
                    (recommend, batch),
                    (similar, batch),
                    (recommend_one, single),
                    (similar_one, single),
                ),
                strict=True,
            )
        )
    best = {}
    for _ in range(args.rounds):
        for kind in KINDS:
            for name in engines:
                call, count = calls[name][kind]
                seconds = _seconds(call)
                best[name, kind] = max(best.get((name, kind), 0.0), count / seconds)
    return best


# -- provenance and output ---------------------------------------------------------------------


def provenance():
    """Machine, load, library versions and BLAS (threadpoolctl), as the other benchmarks."""
    import numpy.linalg  # noqa: F401
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_info

    found = {}
    for name in ("numpy", "scipy", "numba", "implicit", "faiss", "nmslib", "annoy"):
        try:
            module = __import__(name)
            found[name] = getattr(module, "__version__", None) or _dist_version(name)
        except ImportError:
            continue
    blas = [
        {key: info.get(key) for key in ("internal_api", "version", "architecture", "filepath")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    processor = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                processor = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "processor": processor,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": found,
        "blas": {"OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"), "libraries": blas},
    }


def _dist_version(name):
    from importlib.metadata import PackageNotFoundError, version

    for dist in (name, f"{name}-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def markdown(report):
    lines = [
        f"# Approximate queries, {report['provenance']['machine']['node']}",
        "",
        f"{report['provenance']['date']}; {report['provenance']['machine']['processor']}, "
        f"{report['provenance']['machine']['cpu_count']} cores; load average "
        f"{report['load_before']} before, {report['load_after']} after.",
        "",
        f"Notes: {report['notes']}",
        "",
    ]
    for run in report["runs"]:
        exact = run["engines"]["exact"]["recommend_batched_qps"]
        lines += [
            f"## {run['dataset']}, {run['factors']} factors ({run['items']:,} items)",
            "",
            "| engine | build s | recall@10 rec | recall@10 sim | rec batch q/s | rec one q/s "
            "| sim batch q/s | sim one q/s | rec batch vs exact |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in run["engines"].items():
            build = entry.get("build_seconds")
            cells = [
                name,
                "-" if build is None else f"{build:.1f}",
                f"{entry.get('recall_recommend', 1.0):.3f}",
                f"{entry.get('recall_similar_items', 1.0):.3f}",
                *(
                    f"{entry[f'{kind}_qps']:,.0f}"
                    for kind in (
                        "recommend_batched",
                        "recommend_single",
                        "similar_items_batched",
                        "similar_items_single",
                    )
                ),
                f"{entry['recommend_batched_qps'] / exact:.1f}x",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["lastfm-2k", "synthetic-1m-items"])
    parser.add_argument("--factors", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    parser.add_argument(
        "--large-libraries",
        nargs="+",
        default=None,
        choices=LIBRARIES,
        help="libraries on the million-item catalogue (default: --libraries)",
    )
    parser.add_argument(
        "--settings",
        type=json.loads,
        default={},
        help='JSON per library, e.g. \'{"faiss": {"nlist": 1000}}\'',
    )
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--exact-sample", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--notes", default="")
    parser.add_argument("--label", default="", help="added to the file name (e.g. the settings)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/approximate")
    args = parser.parse_args(argv)
    settings = {
        name: {**DEFAULT_SETTINGS[name], **args.settings.get(name, {})} for name in LIBRARIES
    }
    report = {
        "provenance": provenance(),
        "load_before": os.getloadavg(),
        "runs": [],
        "notes": args.notes,
        "arguments": {k: str(v) for k, v in vars(args).items()},
    }
    for dataset in args.datasets:
        libraries = args.libraries
        if dataset == "synthetic-1m-items" and args.large_libraries:
            libraries = args.large_libraries
        for factors in args.factors:
            run = measure(dataset, factors, libraries, settings, args)
            report["runs"].append(run)
            print(json.dumps(run, indent=1), flush=True)
    report["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", platform.node() or "machine").strip("-")
    label = "-".join([*args.datasets, *([args.label] if args.label else []), slug])
    stem = args.out / f"approximate-queries-{label}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
