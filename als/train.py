"""``python -m als.train``: load interactions, train, evaluate, and answer, in one command.

Without ``--data`` it runs the reference MovieLens-1M workflow: keep ratings >= 3 (the
rating is the confidence), add a new user who loves five films, hold out 20% of the other
ratings, fit 15 iterations with 100 factors and regularization 0.01, report precision, MAP,
NDCG and AUC at 10 on the held-out ratings, then print the new user's top 20 (liked films
excluded), the films most similar to their first favourite, and why they would like their
top recommendation.

Examples
--------
    python -m als.train                                     # the reference workflow
    python -m als.train --data ml-100k --factors 64 --save model.npz
    python -m als.train --data plays.csv --user-col user --item-col track --weight-col plays
    python -m als.train --like "Heat (1995)" --like "Fargo (1996)" --similar "Fargo (1996)"
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from .answers import (
    ArgumentParser,
    explain_for_row,
    format_explanation,
    format_ranking,
    recommend_for_row,
    similar_to,
    user_errors,
)
from .data import load
from .evaluation import ranking_metrics_at_k, train_test_split
from .model import AlternatingLeastSquares
from .persistence import check_save_path
from .readers import read_titles_table

REFERENCE_FAVOURITES = [
    "Toy Story (1995)",
    "Star Wars: Episode IV - A New Hope (1977)",
    "Matrix, The (1999)",
    "Fargo (1996)",
    "Godfather, The (1972)",
]

#: the reference workflow's data set and filter, used when --data is not given
REFERENCE_DATA, REFERENCE_MIN_WEIGHT = "ml-1m", 3.0


def build_parser():
    parser = ArgumentParser(
        prog="python -m als.train",
        description=__doc__.split("\n\n")[0] + " Without --data: the reference workflow "
        "(ml-1m, ratings >= 3, five favourite films, 15 iterations, 100 factors).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        help="a known data set (ml-1m, ml-100k, lastfm-2k, ml-20m, ...) or a path to a folder, "
        "ratings file, CSV or Parquet table; when not given, the reference workflow: ml-1m, "
        "--min-weight 3 and five favourite films as --like, unless you give your own",
    )
    data.add_argument("--user-col", help="user column of a generic table")
    data.add_argument("--item-col", help="item column of a generic table")
    data.add_argument("--weight-col", help="weight column of a generic table (default: 1 per row)")
    data.add_argument("--titles", help="a table of item id, title for a generic table")
    data.add_argument("--sep", help="field separator of a generic text table")
    data.add_argument("--min-weight", type=float, help="drop interactions weighing less")
    data.add_argument(
        "--min-user-interactions",
        type=int,
        default=1,
        help="drop users with fewer interactions (repeated to a fixed point)",
    )
    data.add_argument(
        "--min-item-interactions",
        type=int,
        default=1,
        help="drop items with fewer interactions (repeated to a fixed point)",
    )
    data.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed lines (and count them) instead of stopping",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--factors", type=int, default=100)
    model.add_argument("--regularization", type=float, default=0.01)
    model.add_argument("--alpha", type=float, default=1.0, help="confidence = alpha * weight")
    model.add_argument("--iterations", type=int, default=15)
    model.add_argument(
        "--cg-steps",
        type=int,
        default=3,
        help="conjugate-gradient steps per half-iteration; 0 solves exactly",
    )
    model.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "float16"],
        help="factor dtype (float16 only on cuda)",
    )
    model.add_argument("--seed", type=int, default=0, help="seed for the initial factors")
    model.add_argument("--backend", default="auto", choices=["auto", "cpu", "cuda", "numpy"])
    model.add_argument("--threads", type=int, default=0, help="CPU threads, 0 = all cores")
    cluster = model.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers", type=int, help="fit on a local Dask cluster of this many worker processes"
    )
    cluster.add_argument("--scheduler", metavar="ADDRESS", help="fit on this Dask cluster")

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of interactions held out for metrics; 0 trains on all",
    )
    evaluation.add_argument("--k", type=int, default=10, help="cutoff of the ranking metrics")

    answers = parser.add_argument_group("answers")
    answers.add_argument(
        "--like",
        action="append",
        default=[],
        metavar="TITLE",
        help="add a new user who likes this item (title or id); repeatable",
    )
    answers.add_argument(
        "--like-weight", type=float, default=5.0, help="weight of each --like interaction"
    )
    answers.add_argument(
        "--similar",
        action="append",
        default=[],
        metavar="TITLE",
        help="print the items most similar to this one; repeatable",
    )
    answers.add_argument(
        "--explain",
        action="append",
        default=[],
        metavar="TITLE",
        help="explain the new user's score for this item; repeatable",
    )
    answers.add_argument(
        "-N",
        "--count",
        type=int,
        default=20,
        dest="count",
        help="how many recommendations and similar items to print",
    )

    output = parser.add_argument_group("output")
    output.add_argument("--save", metavar="PATH", help="save the model and id maps to one .npz")
    output.add_argument(
        "--json",
        action="store_true",
        help="print a machine-readable summary on stdout (the report goes to stderr)",
    )
    output.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal)"
    )
    output.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def apply_reference_workflow(args):
    """Fill in the reference workflow's data, filter and favourites where not given."""
    args.data = REFERENCE_DATA
    if args.min_weight is None:
        args.min_weight = REFERENCE_MIN_WEIGHT
    if not args.like:
        args.like = list(REFERENCE_FAVOURITES)
    print(
        f"no --data: the reference workflow on {args.data}, ratings >= {args.min_weight:g}, "
        f"a new user who likes {len(args.like)} films",
        file=sys.stderr,
    )


def load_interactions(args):
    """Load and filter the data named by the arguments."""
    options = {"sep": args.sep} if args.sep else {}
    if args.titles:
        options["titles"] = read_titles_table(args.titles)
    data = load(
        args.data,
        user_col=args.user_col,
        item_col=args.item_col,
        weight_col=args.weight_col,
        on_bad_lines="skip" if args.skip_bad_lines else "error",
        **options,
    )
    if (
        args.min_weight is not None
        or args.min_user_interactions > 1
        or args.min_item_interactions > 1
    ):
        data = data.filter(
            min_weight=args.min_weight,
            min_user_interactions=args.min_user_interactions,
            min_item_interactions=args.min_item_interactions,
        )
    return data


def split(user_items, fraction, seed, keep_rows=()):
    """Hold out ``fraction`` of the interactions; rows in ``keep_rows`` stay in train."""
    if fraction <= 0:
        return user_items, None
    if not 0 < fraction < 1:
        raise ValueError(f"--test-fraction must be in [0, 1), got {fraction}")
    train, test = train_test_split(user_items, 1 - fraction, random_state=seed)
    if len(keep_rows):
        train, test = train.tolil(), test.tolil()
        for row in keep_rows:
            train[row] = user_items[row]
            test[row] = 0
        train, test = train.tocsr(), test.tocsr()
        test.eliminate_zeros()
    return train, test


@user_errors
def main(argv):
    args = build_parser().parse_args(argv)
    if args.save:
        check_save_path(args.save)  # before training, not after
    if args.data is None:
        apply_reference_workflow(args)
    report = sys.stderr if args.json else sys.stdout
    # a progress bar is for a terminal: in a log it is noise around the one-line error
    progress = not args.quiet and sys.stderr.isatty()

    def say(text=""):
        print(text, file=report, flush=True)

    started = time.perf_counter()
    data = load_interactions(args)
    new_user = None
    if args.like:
        data = data.add_user(args.like, weights=args.like_weight)
        new_user = data.n_users - 1
    say(data.summary())
    summary = {
        "data": {
            "name": data.name,
            "users": data.n_users,
            "items": data.n_items,
            "interactions": data.nnz,
            "load_seconds": time.perf_counter() - started,
        }
    }

    train, test = split(
        data.user_items,
        args.test_fraction,
        args.seed,
        keep_rows=[] if new_user is None else [new_user],
    )
    model = AlternatingLeastSquares(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        dtype=np.dtype(args.dtype),
        iterations=args.iterations,
        calculate_training_loss=True,
        num_threads=args.threads,
        random_state=args.seed,
        backend=args.backend,
        use_cg=args.cg_steps > 0,
        cg_steps=args.cg_steps if args.cg_steps > 0 else None,
    )
    iteration_seconds, losses = [], []

    def record(iteration, seconds, loss):
        iteration_seconds.append(seconds)
        losses.append(loss)

    say(f"training on {train.nnz:,} interactions with the {model.backend_name!r} backend")
    if args.workers or args.scheduler:
        from .distributed import fit_on_cluster

        fit_on_cluster(
            model,
            train,
            workers=args.workers,
            scheduler=args.scheduler,
            log=say,
            show_progress=progress,
            callback=record,
        )
    else:
        model.fit(train, show_progress=progress, callback=record)
    per_iteration = float(np.median(iteration_seconds)) if iteration_seconds else 0.0
    say(
        f"{args.iterations} iterations, {per_iteration:.3f} s per iteration (median), "
        f"final loss {losses[-1]:.6f}"
        if losses
        else "0 iterations"
    )
    summary["training"] = {
        "backend": model.backend_name,
        "factors": args.factors,
        "iterations": args.iterations,
        "seconds_per_iteration": per_iteration,
        "iteration_seconds": iteration_seconds,
        "loss": losses,
    }

    if test is not None and test.nnz:
        metrics = ranking_metrics_at_k(model, train, test, K=args.k, show_progress=False)
        say(
            f"held-out {test.nnz:,} interactions, at k={args.k}: "
            + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        )
        summary["metrics"] = {"k": args.k, **metrics}

    summary.update(answer(model, data, train, new_user, args, say))
    if args.save:
        model.save(args.save, extra=data.to_arrays())
        say(f"saved the model and id maps to {args.save}")
        summary["saved"] = args.save
    summary["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def answer(model, data, train, new_user, args, say):
    """Recommendations, similar items and explanations the arguments ask for."""
    answers = {}
    user = new_user if new_user is not None else 0
    row = train[user]
    who = "the new user" if new_user is not None else f"user {data.user_id(user)}"
    ranking = recommend_for_row(model, data, row, N=args.count, userid=user)
    say(format_ranking(f"top {args.count} for {who} (already liked items left out):", ranking))
    answers["recommendations"] = {"user": str(data.user_id(user)), "items": ranking}

    similar_titles = args.similar or ([args.like[0]] if args.like and not args.json else [])
    answers["similar"] = {}
    for title in similar_titles:
        column = data.resolve_item(title)
        similar = similar_to(model, data, column, N=min(args.count, 10))
        say(format_ranking(f"most similar to {data.item_title(column)}:", similar))
        answers["similar"][title] = similar

    targets = [(title, data.resolve_item(title)) for title in args.explain]
    if not targets and ranking and args.like:
        # by default, explain the new user's top recommendation
        targets = [(ranking[0]["title"], data.item_index(ranking[0]["item"]))]
    answers["explanations"] = {}
    for title, column in targets:
        explanation = explain_for_row(model, data, row, column)
        say(format_explanation(f"why {who} gets {data.item_title(column)}:", explanation))
        answers["explanations"][title] = explanation
    return answers


if __name__ == "__main__":
    sys.exit(main())
