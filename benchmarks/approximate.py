"""Approximate queries: ``als.ann`` against implicit's wrappers and our exact path, same factors.

Usage::

    python -m benchmarks.approximate [--datasets lastfm-2k synthetic-1m-items ...]
        [--factors 64 128] [--libraries faiss nmslib annoy] [--presets implicit recall]
        [--libraries-on synthetic-1m-items=faiss,annoy] [--queries 10000]
    python -m benchmarks.approximate --quick      # smoke test, under a minute

For each data set and factor count one set of factors is made: lastfm-2k's by fitting our
model (15 iterations, seed 0, play counts as confidences); the synthetic catalogues' drawn
from a mixture (1,000 Gaussian taste clusters, item norms log-normal as fitted item norms
grow with popularity, users drawn near the same clusters, 20 random liked items each),
because fitting a million items is not what is measured. ``synthetic-100k-items`` is the
same generator with 100,000 items: the catalogue for libraries whose million-item builds
take too long on a small machine (``--libraries-on``; NMSLib's HNSW by default).

Engines, all over those factors: ``als exact`` (the model's own queries); for each library
and preset, ``als <library>`` (``als.ann.<Library>Model``) and ``implicit <library>``
(``implicit.ann.<library>`` over an implicit model holding the same arrays). Presets:
``implicit`` is implicit's defaults; ``recall`` settings that reach recall@10 >= 0.95 of
``recommend`` where the library can (see ``preset_settings``).

Measured: build seconds (ours builds each index on its first query: the ``recommend`` index
alone, and both; implicit's ``fit`` builds both); recall@10 of ``recommend`` (liked items
filtered) and ``similar_items`` against our exact top 10 on 1,000 queries; queries per
second for ``--queries`` ``recommend`` and ``similar_items`` calls, batched in one call and
one at a time, the engines taking turns (``harness.take_turns``), best of ``--rounds``. The
exact path on a million items is timed on a fixed sample (``--exact-sample`` batched,
``--exact-single`` one at a time), said in the notes.

Results go to ``results/approximate/`` (``--out``), named by data sets, factors and machine.
"""

from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import scipy.sparse

from benchmarks import harness

LIBRARIES = ("faiss", "nmslib", "annoy")
PRESETS = ("implicit", "recall")
K = 10
RECALL_QUERIES = 1000

#: synthetic catalogues: name -> items (users: 100,000, 20 liked items each)
SYNTHETIC_ITEMS = {"synthetic-1m-items": 1_000_000, "synthetic-100k-items": 100_000}

#: the libraries each data set runs unless --libraries-on says otherwise: HNSW builds of a
#: million rows take over 4 minutes per index on 2 cores (50,000 rows: 9 s), so NMSLib
#: indexes the 100,000-item catalogue instead
DEFAULT_LIBRARIES_ON = {
    "synthetic-1m-items": ("faiss", "annoy"),
    "synthetic-100k-items": ("nmslib",),
}

#: the settings a search reads (a new value needs no new index), by library
QUERY_SETTINGS = {"faiss": ("nprobe",), "nmslib": ("query_params",), "annoy": ("search_k",)}

QUERY_KINDS = ("recommend_batched", "recommend_single", "similar_batched", "similar_single")


# -- factors ----------------------------------------------------------------------------------


def synthetic_factors(factors, n_items, n_users=100_000, clusters=1000, seed=0):
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


def fitted_factors(dataset, factors):
    """Our model fitted on a real data set (raw weights as confidences), and its matrix."""
    user_items = harness.load_dataset(dataset)
    model = harness.make_model("als-cpu", factors, 15)
    model.fit(user_items, show_progress=False)
    return model.user_factors, model.item_factors, user_items


def make_factors(dataset, factors):
    if dataset in SYNTHETIC_ITEMS:
        return synthetic_factors(factors, SYNTHETIC_ITEMS[dataset])
    return fitted_factors(dataset, factors)


# -- engines ----------------------------------------------------------------------------------


def preset_settings(library, preset, n_items):
    """The index settings of a preset, for a catalogue of ``n_items``.

    ``recall`` values come from sweeps on these catalogues: Faiss keeps about 250 items per
    cell and searches 1% of the cells on a million items (recall@10 of recommend 0.96), 10%
    of 400 cells on lastfm-2k; NMSLib searches with ``ef`` 400; Annoy inspects 20 times the
    nodes of its default ``search_k``.
    """
    if preset == "implicit":
        return {}
    if library == "faiss":
        return {"nlist": 4000, "nprobe": 40} if n_items >= 500_000 else {"nprobe": 60}
    if library == "nmslib":
        return {"query_params": {"ef": 400}}
    return {"search_k": 50 * 20 * (K + 20)}


def our_engines(users, items):
    """Our exact model over the factors, and a function making our wrappers around it."""
    from als.ann import AnnoyModel, FaissModel, NMSLibModel

    model = harness.make_model("als-cpu", users.shape[1], 1)
    model.user_factors, model.item_factors = users, items
    classes = {"faiss": FaissModel, "nmslib": NMSLibModel, "annoy": AnnoyModel}
    return model, lambda library, settings: classes[library](model, **settings)


def implicit_engine(library, users, items, settings):
    """implicit's wrapper over an implicit model holding the factors, and its fit seconds."""
    from implicit.cpu.als import AlternatingLeastSquares as ImplicitALS

    model = ImplicitALS(factors=users.shape[1])
    # copies: implicit's similar_items(itemid) normalises that item's factors in place
    model.user_factors, model.item_factors = users.copy(), items.copy()
    model.fit = lambda *args, **kwargs: None  # keep these factors: the wrapper only indexes
    if library == "faiss":
        from implicit.ann.faiss import FaissModel as Wrapper

        settings = {**settings, "use_gpu": False}
    elif library == "nmslib":
        from implicit.ann.nmslib import NMSLibModel as Wrapper
    else:
        from implicit.ann.annoy import AnnoyModel as Wrapper
    wrapper = Wrapper(model, **settings)
    seconds, _ = harness.timed(lambda: wrapper.fit(None, show_progress=False))
    return wrapper, seconds


# -- measurements -----------------------------------------------------------------------------


def recall_at_k(found, exact):
    """Mean share of each exact top ``K`` (padding left out) that ``found`` holds."""
    hits = [
        len(set(a) & set(b) - {-1}) / max(len(set(b) - {-1}), 1)
        for a, b in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits))


def answers(engine, case, rows):
    """The top ``K`` ids of ``recommend`` (liked filtered) and ``similar_items``, batched."""
    users = case.users[rows]
    return (
        engine.recommend(users, case.user_items[users], N=K)[0],
        engine.similar_items(case.items[rows], N=K)[0],
    )


def query_calls(engine, case, counts):
    """The four timed calls of one engine, each with its number of queries."""
    batch, single = counts
    users, items, user_items = case.users, case.items, case.user_items
    rows = [user_items[user] for user in users[:single]]  # sliced before timing

    def recommend_single():
        for user, row in zip(users[:single], rows, strict=True):
            engine.recommend(user, row, N=K)

    def similar_single():
        for item in items[:single]:
            engine.similar_items(item, N=K)

    liked = user_items[users[:batch]]
    return {
        "recommend_batched": (lambda: engine.recommend(users[:batch], liked, N=K), batch),
        "recommend_single": (recommend_single, single),
        "similar_batched": (lambda: engine.similar_items(items[:batch], N=K), batch),
        "similar_single": (similar_single, single),
    }


def build_ours(wrapper, case):
    """Seconds to the first ``recommend`` (its index) and on to the first ``similar_items``."""
    users = case.users[:1]
    recommend_s, _ = harness.timed(lambda: wrapper.recommend(users, case.user_items[users]))
    similar_s, _ = harness.timed(lambda: wrapper.similar_items(case.items[:1]))
    return {"build_recommend_s": recommend_s, "build_s": recommend_s + similar_s}


def measure_case(dataset, factors, libraries, presets, args, result):
    """Our exact path, then every library and preset, on one set of factors."""
    users_f, items_f, user_items = make_factors(dataset, factors)
    n_items = len(items_f)
    rng = np.random.default_rng(1)
    case = Case(
        dataset,
        factors,
        n_items,
        user_items,
        users=rng.integers(len(users_f), size=args.queries),
        items=rng.integers(n_items, size=args.queries),
    )
    exact, wrap = our_engines(users_f, items_f)
    case.truth = answers(exact, case, slice(0, RECALL_QUERIES))
    counts = (min(args.exact_sample, args.queries), min(args.exact_single, args.queries))
    rates = take_turns({"als exact": exact}, case, counts, args.rounds)["als exact"]
    case.exact_rate = rates["recommend_batched"]
    record(
        result, case, "als exact", {"recall_recommend": 1.0, "recall_similar": 1.0}, rates, counts
    )
    for library in libraries:
        built = {}
        for preset in presets:
            settings = preset_settings(library, preset, n_items)
            # a preset that changes only what a search reads retunes the indexes already built
            key = repr({k: v for k, v in settings.items() if k not in QUERY_SETTINGS[library]})
            if key in built:
                ours, theirs = built[key]
                retune(library, ours, theirs, settings)
                builds = (None, None)
            else:
                ours = wrap(library, settings)
                our_build = build_ours(ours, case)
                theirs, their_build = implicit_engine(library, users_f, items_f, settings)
                builds = (our_build, {"build_s": their_build})
                built[key] = ours, theirs
            engines = {f"als {library} ({preset})": ours, f"implicit {library} ({preset})": theirs}
            rows = {}
            for (name, engine), build in zip(engines.items(), builds, strict=True):
                found = answers(engine, case, slice(0, RECALL_QUERIES))
                rows[name] = {
                    **(build or {}),
                    "recall_recommend": recall_at_k(found[0], case.truth[0]),
                    "recall_similar": recall_at_k(found[1], case.truth[1]),
                    "settings": settings_text(library, settings),
                }
            counts = (args.queries, args.queries)
            rates = take_turns(engines, case, counts, args.rounds)
            for name, row in rows.items():
                record(result, case, name, row, rates[name], counts)


class Case:
    """One data set and factor count: its liked items, the query ids, the exact answers."""

    def __init__(self, dataset, factors, n_items, user_items, users, items):
        self.dataset, self.factors, self.n_items = dataset, factors, n_items
        self.user_items, self.users, self.items = user_items, users, items
        self.truth = None
        self.exact_rate = None


def record(result, case, engine, row, rates, counts):
    """Add one engine's measurements on ``case`` to the result."""
    result.add(
        "approximate",
        case=f"{case.dataset}, {case.factors} factors ({case.n_items:,} items)",
        dataset=case.dataset,
        factors=case.factors,
        items=case.n_items,
        engine=engine,
        family=engine.split(" (")[0],  # the engine without its preset: one line in the chart
        **row,
        **{f"{kind}_qps": rate for kind, rate in rates.items()},
        recommend_vs_exact=rates["recommend_batched"] / case.exact_rate,
        queries=dict(zip(("batched", "single"), counts, strict=True)),
    )


def retune(library, ours, theirs, settings):
    """Set a preset's query-time settings on both built wrappers (implicit's through its
    public index attributes: its wrappers read them at every search)."""
    for name in QUERY_SETTINGS[library]:
        setattr(ours, name, settings.get(name, type(ours).INDEX_DEFAULTS[name]))
    indexes = [theirs.recommend_index, theirs.similar_items_index]
    if library == "faiss":
        theirs.nprobe = ours.nprobe
        for index in indexes:
            index.nprobe = ours.nprobe
    elif library == "nmslib":
        theirs.query_params = ours.query_params
        for index in indexes:
            index.setQueryTimeParams(ours.query_params)
    else:
        theirs.search_k = ours.search_k


def settings_text(library, settings):
    """The settings in words, implicit's defaults filled in."""
    defaults = {
        "faiss": {"nlist": 400, "nprobe": 20},
        "nmslib": {"M": 16, "efConstruction": 400, "ef": 90},
        "annoy": {"n_trees": 50, "search_k": "n_trees*N"},
    }[library]
    flat = dict(settings)
    flat.update(flat.pop("query_params", {}))
    return ", ".join(f"{key} {value}" for key, value in {**defaults, **flat}.items())


def take_turns(engines, case, counts, rounds):
    """Queries per second of every engine and query kind, best of ``rounds``, in turns."""
    calls = {name: query_calls(engine, case, counts) for name, engine in engines.items()}
    rates = {name: {} for name in engines}
    for kind in QUERY_KINDS:

        def run(name, kind=kind):
            call, count = calls[name][kind]
            seconds, _ = harness.timed(call)
            return count / seconds

        for name, measured in harness.take_turns(list(engines), rounds, run).items():
            rates[name][kind] = max(measured)
    return rates


# -- the result -------------------------------------------------------------------------------

COLUMNS = [
    ["engine", "engine", "{}"],
    ["settings", "settings", "{}"],
    ["build_s", "build s", "{:,.1f}"],
    ["build_recommend_s", "recommend index s", "{:,.1f}"],
    ["recall_recommend", "recall@10 rec", "{:.3f}"],
    ["recall_similar", "recall@10 sim", "{:.3f}"],
    ["recommend_batched_qps", "rec batch q/s", "{:,.0f}"],
    ["recommend_single_qps", "rec one q/s", "{:,.0f}"],
    ["similar_batched_qps", "sim batch q/s", "{:,.0f}"],
    ["similar_single_qps", "sim one q/s", "{:,.0f}"],
    ["recommend_vs_exact", "rec batch vs exact", "{:.1f}x"],
]

CHART = {
    "kind": "approximate",
    "x": "recall_recommend",
    "y": "recommend_batched_qps",
    "series": "family",
    "panels": "case",
    "ylog": True,
    "xlabel": "recall@10 of recommend",
    "ylabel": "batched recommend, queries/s",
}


def parse_args(argv):
    parser = harness.argument_parser("approximate", __doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--datasets", nargs="+", metavar="NAME")
    parser.add_argument("--factors", nargs="+", type=int)
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument(
        "--libraries-on",
        nargs="+",
        default=[],
        metavar="DATASET=LIB,...",
        help="the libraries of one data set (default: every --libraries, NMSLib only on "
        "synthetic-100k-items, Faiss and Annoy on synthetic-1m-items)",
    )
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS))
    parser.add_argument("--queries", type=int, help="queries per timing (default 10,000)")
    parser.add_argument("--exact-sample", type=int, default=2000, help="exact batched queries")
    parser.add_argument("--exact-single", type=int, default=200, help="exact single queries")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (best counts)")
    parser.add_argument("--out", help="folder for the result (results/approximate)")
    parser.add_argument("--name", help="the result file's name (default: what it measures)")
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ["synthetic-100k-items"]
        args.factors = args.factors or [32]
        args.libraries = ["faiss"]
        args.presets = ["implicit"]
        args.queries = args.queries or 1000
        args.exact_sample, args.exact_single, args.rounds = 1000, 100, 1
        args.libraries_on = [f"{name}=faiss" for name in args.datasets]
    args.datasets = args.datasets or ["lastfm-2k", "synthetic-1m-items", "synthetic-100k-items"]
    args.factors = args.factors or [64, 128]
    args.queries = args.queries or 10_000
    chosen = {name: tuple(DEFAULT_LIBRARIES_ON.get(name, LIBRARIES)) for name in args.datasets}
    for entry in args.libraries_on:
        name, _, libraries = entry.partition("=")
        chosen[name] = tuple(libraries.split(",")) if libraries else ()
    args.libraries_on = {
        name: [lib for lib in args.libraries if lib in libraries]
        for name, libraries in chosen.items()
    }
    return args


def library_versions():
    """Versions of the index libraries installed (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("faiss-cpu", "faiss-gpu", "nmslib", "annoy"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def default_name(args):
    datasets = [name.replace("-", "") for name in args.datasets]
    return "-".join(["approximate", *datasets, *(f"f{f}" for f in args.factors)])


def main(argv=None):
    args = parse_args(argv)
    params = {
        "N": K,
        "queries": args.queries,
        "recall queries": RECALL_QUERIES,
        "rounds (best counts)": args.rounds,
        "exact sample": f"{args.exact_sample} batched, {args.exact_single} one at a time",
    }
    tables = [
        {
            "kind": "approximate",
            "title": f"{dataset}, {factors} factors",
            "where": {"dataset": dataset, "factors": factors},
            "columns": COLUMNS,
        }
        for dataset in args.datasets
        for factors in args.factors
    ]
    name = args.name or default_name(args)
    result = harness.Result(
        "approximate",
        "Approximate queries against implicit's wrappers and the exact path",
        harness.command_line("approximate", argv),
        params,
        None if args.no_save else harness.result_path(args.out, "approximate", name),
        tables=tables,
        chart=CHART,
        notes=[NOTE.format(exact=args.exact_sample, single=args.exact_single)],
    )
    result.data["provenance"]["versions"].update(library_versions())
    os.environ.setdefault("ALS_DATA_DIR", str(harness.DATA_DIR))
    for dataset in args.datasets:
        for factors in args.factors:
            start = time.perf_counter()
            libraries = args.libraries_on[dataset]
            measure_case(dataset, factors, libraries, args.presets, args, result)
            print(f"{dataset}, {factors} factors: {time.perf_counter() - start:.0f} s", flush=True)
    return result.finish()


NOTE = (
    "Every engine answers from the same factors. Build s: both indexes (ours builds each on "
    "its first query; implicit's fit builds both); recommend index s: ours to the first "
    "recommend; blank where a preset changes only query-time settings (nprobe, ef, "
    "search_k) and both engines search the indexes built for the row above, retuned. "
    "Recall@10 against our exact top 10 on 1,000 queries (recommend with liked items "
    "filtered). Queries per second: best of the rounds, ours and implicit's wrapper taking "
    "turns query kind by query kind; the exact path timed before them, on min({exact}, queries) "
    "queries batched and min({single}, queries) one at a time. rec batch vs exact: batched "
    "recommend against our exact batched recommend."
)


if __name__ == "__main__":
    main()
