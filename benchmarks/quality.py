"""Recommendation quality: the tuner with our model options against the tuner over implicit's.

    python -m benchmarks.quality                         # ml-1m (ratings >= 3) and lastfm-2k
    python -m benchmarks.quality --trials 4 --max-iterations 4 --out /tmp/q   # a smoke run
    python -m benchmarks.quality --report-only --out benchmarks/results/quality-NAME

For each data set:

1. split the interactions 80/20 with split seed 0 (``implicit.evaluation.train_test_split``
   semantics) and run ``als.tune.tune`` on the training part twice, with the same trial
   budget and sampler seed: once over our space (``--space als``: the opt-in confidence
   functions, alpha0, nu and the paper's initialisation), once over implicit's own
   parameters (``--space implicit``: factors, regularization, alpha, iterations). Trials
   are scored on a validation split carved from the training part;
2. fit each space's best settings, and the notebook's defaults (100 factors, lambda 0.01,
   alpha 1, 15 iterations) for reference, on fresh 80/20 splits with split seeds 1, 2, 3
   (splits the tuner never saw) and report held-out NDCG@10, MAP@10 and recall@20: mean
   and spread (sample standard deviation) over the three seeds;
3. for split seed 1, record held-out NDCG@10 after every iteration against the training
   seconds so far (evaluation time excluded), for the plot.

Models in the implicit space are our model at implicit's parameters, which is implicit's
model (``tests/test_agreement.py``), trained by the same backend as the others so that the
seconds compare. Results are written after every step to ``OUT.json``; ``OUT.md`` (table)
and ``OUT.png`` (plot) are written at the end, or from the JSON by ``--report-only``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA_DIR, machine_info, utc_now, versions

#: data set -> (name for als.data.load, minimum weight kept)
DATASETS = {"ml-1m": ("ml-1m", 3.0), "lastfm-2k": ("lastfm-2k", None)}

#: the notebook's settings, as a reference row
NOTEBOOK = {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}

SPACES = ("als", "implicit")


def load(name):
    os.environ.setdefault("ALS_DATA_DIR", str(DATA_DIR))
    from als.data import load as load_data

    source, min_weight = DATASETS[name]
    data = load_data(source, download=False)
    if min_weight is not None:
        data = data.filter(min_weight=min_weight)
    return data.user_items.astype(np.float32).tocsr()


def recall_at(model, train, test, N=20, batch=1000):
    """Mean over test users of hits in the top ``N`` (train items filtered) / min(N, |test|)."""
    users = np.flatnonzero(np.diff(test.indptr))
    total = 0.0
    for start in range(0, len(users), batch):
        ids = users[start : start + batch]
        recommended, _ = model.recommend(ids, train[ids], N=N)
        for row, user in zip(recommended, ids, strict=True):
            relevant = test.indices[test.indptr[user] : test.indptr[user + 1]]
            hits = np.isin(row[row >= 0], relevant).sum()
            total += hits / min(N, len(relevant))
    return total / len(users)


def evaluate(params, train, test, seed, threads, curve=False):
    """Fit ``params`` on ``train``; return held-out metrics (and, with ``curve``, NDCG@10
    after every iteration against the training seconds so far)."""
    from als import AlternatingLeastSquares
    from als.evaluation import ranking_metrics_at_k

    model = AlternatingLeastSquares(**params, random_state=seed, backend="cpu", num_threads=threads)
    points, elapsed = [], [0.0]

    def record(iteration, seconds, loss):
        # ``seconds`` is this iteration's fit time: the model's clock restarts after the
        # callback, so the evaluation below is not counted
        elapsed[0] += seconds
        if curve:
            ndcg = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)["ndcg"]
            points.append([elapsed[0], ndcg])

    model.fit(train, show_progress=False, callback=record)
    metrics = ranking_metrics_at_k(model, train, test, K=10, show_progress=False)
    result = {
        "ndcg@10": metrics["ndcg"],
        "map@10": metrics["map"],
        "recall@20": recall_at(model, train, test, N=20),
        "fit_seconds": elapsed[0],
    }
    if curve:
        result["curve"] = points
    return result


def run(args):
    from als.evaluation import train_test_split
    from als.tune import tune

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "started": utc_now(),
        "machine": machine_info(),
        "versions": versions(),
        "settings": {
            "trials": args.trials,
            "minutes_per_search": args.minutes,
            "tune_seed": args.tune_seed,
            "report_seeds": args.seeds,
            "max_factors": args.max_factors,
            "max_iterations": args.max_iterations,
            "threads": args.threads,
        },
        "datasets": {},
    }

    def save():
        out.with_suffix(".json").write_text(json.dumps(results, indent=2))

    for name in args.datasets:
        matrix = load(name)
        entry = results["datasets"][name] = {
            "shape": list(matrix.shape),
            "nnz": int(matrix.nnz),
            "tuned": {},
            "report": {},
        }
        train, _ = train_test_split(matrix, 0.8, random_state=args.tune_seed)
        for space in SPACES:
            started = time.perf_counter()
            found = tune(
                train,
                space=space,
                trials=args.trials,
                minutes=args.minutes,
                seed=args.tune_seed,
                k=10,
                backend="cpu",
                threads=args.threads,
                max_factors=args.max_factors,
                max_iterations=args.max_iterations,
                show_progress=not args.quiet,
            )
            entry["tuned"][space] = {
                "params": found.best_params,
                "validation_ndcg@10": found.best_value,
                "trials_finished": sum(t["state"] == "complete" for t in found.trials),
                "search_seconds": time.perf_counter() - started,
                "trials": found.trials,
            }
            print(f"{name} {space}: {found.best_value:.4f} {found.best_params}", flush=True)
            save()
        candidates = {
            "als (tuned, our options)": entry["tuned"]["als"]["params"],
            "implicit space (tuned)": entry["tuned"]["implicit"]["params"],
            "notebook defaults": NOTEBOOK,
        }
        for label, params in candidates.items():
            runs = []
            for position, seed in enumerate(args.seeds):
                train, test = train_test_split(matrix, 0.8, random_state=seed)
                runs.append(evaluate(params, train, test, seed, args.threads, position == 0))
                entry["report"][label] = {"params": params, "runs": runs}
                save()
            print(f"{name} {label}: {summarise(runs)}", flush=True)
    results["finished"] = utc_now()
    save()
    report(out)


def summarise(runs):
    """Mean and sample standard deviation of each metric over the runs."""
    summary = {}
    for metric in ("ndcg@10", "map@10", "recall@20", "fit_seconds"):
        values = [r[metric] for r in runs]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[metric] = (statistics.fmean(values), spread)
    return summary


def report(out):
    """Write OUT.md (table and margins) and OUT.png (NDCG@10 against seconds) from OUT.json."""
    out = Path(out)
    results = json.loads(out.with_suffix(".json").read_text())
    settings = results["settings"]
    lines = [
        "# Recommendation quality: tuned als options vs tuned implicit space "
        f"({results['started']})",
        "",
        f"Machine: {results['machine'].get('processor')}, {results['machine'].get('cpu_count')} "
        f"cores (shared with other work while this ran), {settings['threads'] or 'all'} threads. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items())}.",
        "",
        f"Budget per search: {settings['trials']} Optuna TPE trials (at most "
        f"{settings['minutes_per_search']} minutes), sampler seed {settings['tune_seed']}, "
        f"factors <= {settings['max_factors']}, iterations <= {settings['max_iterations']}; "
        f"tuned on split seed {settings['tune_seed']} (validation carved from its training part), "
        f"reported on split seeds {', '.join(map(str, settings['report_seeds']))}: mean ± sample "
        "standard deviation. `python -m benchmarks.quality` (see its docstring) made this.",
        "",
    ]
    for name, entry in results["datasets"].items():
        lines += [
            f"## {name} ({entry['shape'][0]:,} users x {entry['shape'][1]:,} items, "
            f"{entry['nnz']:,} interactions)",
            "",
            "| settings | NDCG@10 | MAP@10 | recall@20 | fit seconds |",
            "|---|---|---|---|---|",
        ]
        summaries = {label: summarise(r["runs"]) for label, r in entry["report"].items()}
        for label, summary in summaries.items():
            cells = [f"{m:.4f} ± {s:.4f}" for m, s in list(summary.values())[:3]]
            fit = summary["fit_seconds"]
            lines.append(f"| {label} | {' | '.join(cells)} | {fit[0]:.1f} ± {fit[1]:.1f} |")
        ours = summaries.get("als (tuned, our options)")
        theirs = summaries.get("implicit space (tuned)")
        if ours and theirs:
            margin = ours["ndcg@10"][0] / theirs["ndcg@10"][0] - 1
            lines += [
                "",
                f"Margin on held-out NDCG@10: {100 * margin:+.1f}% relative (target: +5%).",
            ]
        lines += ["", "Tuned settings (validation NDCG@10, trials finished, search minutes):", ""]
        for space, tuned in entry["tuned"].items():
            lines.append(
                f"- {space}: `{json.dumps(tuned['params'], sort_keys=True)}` "
                f"({tuned['validation_ndcg@10']:.4f}, {tuned['trials_finished']}, "
                f"{tuned['search_seconds'] / 60:.1f})"
            )
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    plot(results, out.with_suffix(".png"))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    figure, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        for label, entry in results["datasets"][name]["report"].items():
            curve = entry["runs"][0].get("curve")
            if curve:
                seconds, ndcg = zip(*curve, strict=True)
                axis.plot(seconds, ndcg, marker="o", markersize=3, label=label)
        seed = results["settings"]["report_seeds"][0]
        axis.set_title(f"{name}: held-out NDCG@10 (split seed {seed})")
        axis.set_xlabel("training seconds")
        axis.set_ylabel("NDCG@10")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=6.0, help="cap per search")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--max-factors", type=int, default=128)
    parser.add_argument("--max-iterations", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/quality")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.report_only:
        report(args.out)
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
