"""``python -m als.train``: load interactions, train, and answer, in one command.

Without ``--data`` it runs the reference MovieLens-1M workflow (the notebook this project
was built from): keep ratings >= 3 (the rating is the confidence), add a new user,
``braum``, who gave 5 to five films, fit 15 iterations with 100 factors and regularization
0.01 on all the interactions, then print braum's predicted preference for Forrest Gump and
for Toy Story, the films most similar to Forrest Gump, braum's top 20 (liked films left
out) and why braum would like Forrest Gump. ``--evaluate`` adds a second, separate fit on
80% of the interactions and reports precision, MAP, NDCG and AUC on the other 20%; the
answers always come from the model trained on everything.

Examples
--------
    python -m als.train                                     # the reference workflow
    python -m als.train --evaluate                          # ... and held-out metrics
    python -m als.train --data ml-100k --factors 64 --save model.npz
    python -m als.train --data plays.csv --user-col user --item-col track --weight-col plays
    python -m als.train --like "Heat" --like "Fargo" --similar "Fargo" --explain "Casino"
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time

import numpy as np
import scipy.sparse

from .answers import (
    OneLineParser,
    add_count,
    add_repeatable,
    explain_for_row,
    format_explanation,
    format_predictions,
    format_ranking,
    number,
    predict_for_user,
    recommend_for_row,
    similar_to,
    user_errors,
)
from .compile_note import compile_note
from .data import load
from .errors import InvalidValueError
from .evaluation import ranking_metrics_at_k, train_test_split
from .model import AlternatingLeastSquares
from .persistence import check_save_path
from .readers import read_titles_table

#: the reference notebook's workflow, used when --data is not given
REFERENCE = {
    "data": "ml-1m",
    "min_weight": 3.0,
    "like": [
        "Star Wars: Episode IV - A New Hope (1977)",
        "Terminator 2: Judgment Day (1991)",
        "Sixth Sense, The (1999)",
        "Forrest Gump (1994)",
        "Matrix, The (1999)",
    ],
    "predict": ["Forrest Gump (1994)", "Toy Story (1995)"],
    "similar": ["Forrest Gump (1994)"],
    "explain": ["Forrest Gump (1994)"],
}


def build_parser():
    parser = OneLineParser(
        prog="python -m als.train",
        description=__doc__.split("\n\n")[0] + " Without --data: the reference workflow "
        "(ml-1m, ratings >= 3, a new user 'braum' with five films, 15 iterations, 100 factors, "
        "trained on all interactions).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(parser)

    model = parser.add_argument_group("model")
    model.add_argument("--factors", type=number(int, 1), default=100, help="latent factors")
    model.add_argument(
        "--regularization", type=number(float, 0), default=0.01, help="L2 regularization"
    )
    model.add_argument(
        "--alpha", type=number(float, above=0), default=1.0, help="confidence = alpha * weight"
    )
    model.add_argument(
        "--iterations", type=number(int, 0), default=15, help="alternating least squares sweeps"
    )
    model.add_argument(
        "--cg-steps",
        type=number(int, 0),
        default=3,
        help="conjugate-gradient steps per half-iteration; 0 solves exactly",
    )
    model.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64", "float16"],
        help="factor dtype (float16 only on cuda)",
    )
    model.add_argument(
        "--seed", type=number(int, 0), default=0, help="seed for the initial factors"
    )
    model.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "cpu", "cuda", "numpy"],
        help="where to compute: auto picks cuda when a GPU is usable, else cpu",
    )
    model.add_argument(
        "--threads", type=number(int, 0), default=0, help="CPU threads, 0 = all cores"
    )
    model.add_argument(
        "--params",
        metavar="JSON_OR_PATH",
        help="model settings that override the flags above: a JSON object of "
        "AlternatingLeastSquares keyword arguments, or a file holding one (python -m als.tune "
        "--json output is read too)",
    )
    cluster = model.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=number(int, 1),
        help="fit on a local Dask cluster of this many worker processes (None: no cluster)",
    )
    cluster.add_argument(
        "--scheduler", metavar="ADDRESS", help="fit on the Dask cluster at this address"
    )

    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--evaluate",
        action="store_true",
        help="also fit a second model on a split and report held-out metrics; the answers "
        "still come from the model trained on all interactions",
    )
    evaluation.add_argument(
        "--test-fraction",
        type=number(float, above=0, below=1),
        default=0.2,
        help="share of interactions --evaluate holds out",
    )
    evaluation.add_argument(
        "--k", type=number(int, 1), default=10, help="cutoff of the ranking metrics"
    )
    evaluation.add_argument(
        "--eval-users",
        type=number(int, 1),
        default=10_000,
        help="with --workers/--scheduler and a CSV or Parquet table (read on the workers): "
        "--evaluate scores this many sampled users, whose rows alone come to the client",
    )

    answers = parser.add_argument_group("answers")
    answers.add_argument(
        "--user",
        metavar="ID",
        help="answer for this existing user (raw id) instead of a new one",
    )
    add_repeatable(
        answers,
        "--like",
        "add a new user who likes this item (title, title without year, or id); repeatable",
    )
    answers.add_argument(
        "--like-weight",
        type=number(float, above=0),
        default=5.0,
        help="weight of each --like interaction",
    )
    answers.add_argument(
        "--user-name", default="braum", help="raw id given to the new user of --like"
    )
    add_repeatable(
        answers,
        "--predict",
        "print the user's predicted preference for this item; repeatable",
    )
    add_repeatable(
        answers,
        "--similar",
        "print the items most similar to this one; repeatable (default: the first --like)",
    )
    add_repeatable(
        answers,
        "--explain",
        "explain the user's score for this item; repeatable (default: their top item)",
    )
    add_count(answers, "how many recommendations to print (similar items: at most 10)")

    output = parser.add_argument_group("output")
    output.add_argument("--save", metavar="PATH", help="save the model and id maps to one .npz")
    output.add_argument(
        "--json",
        action="store_true",
        help="print everything the report says, the parameters and the seed as JSON on "
        "stdout (the report goes to stderr)",
    )
    output.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal)"
    )
    output.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def add_data_arguments(parser):
    """Add the data options (``--data``, ``--user-col`` ...); ``python -m als.tune`` shares
    them."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        help="a known data set (ml-1m, ml-100k, lastfm-2k, ml-20m, ...) or a path to a folder, "
        "ratings file, CSV or Parquet table; when not given, the reference workflow: ml-1m, "
        "--min-weight 3, braum's five films as --like, and the notebook's questions",
    )
    data.add_argument("--user-col", help="user column of a generic table (default: guessed)")
    data.add_argument("--item-col", help="item column of a generic table (default: guessed)")
    data.add_argument("--weight-col", help="weight column of a generic table (None: 1 per row)")
    data.add_argument("--titles", help="a table of item id, title for a generic table")
    data.add_argument("--sep", help="field separator of a generic text table (None: guessed)")
    data.add_argument(
        "--min-weight",
        type=number(float),
        help="drop interactions weighing less (None: keep all; 3 in the reference workflow)",
    )
    data.add_argument(
        "--min-user-interactions",
        type=number(int, 1),
        default=1,
        help="drop users with fewer interactions (repeated to a fixed point)",
    )
    data.add_argument(
        "--min-item-interactions",
        type=number(int, 1),
        default=1,
        help="drop items with fewer interactions (repeated to a fixed point)",
    )
    data.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed lines (and count them) instead of stopping",
    )
    return data


#: model arguments --params may set; the rest (backend, threads, seed) stay command-line flags
PARAMS = frozenset(inspect.signature(AlternatingLeastSquares).parameters) - {
    "backend",
    "num_threads",
    "random_state",
    "use_gpu",
    "use_native",
}


def read_params(value):
    """``AlternatingLeastSquares`` keyword arguments from ``--params``.

    ``value`` is a JSON object or the path of a file holding one; ``python -m als.tune
    --json`` output (``{"best": {"params": ...}}``) is read too.
    """
    text = value
    if not value.lstrip().startswith("{"):
        try:
            with open(value, encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise InvalidValueError(f"--params: cannot read {value!r}: {exc.strerror}") from exc
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidValueError(f"--params is not a JSON object: {exc}") from exc
    if isinstance(params, dict) and isinstance(params.get("best"), dict):
        params = params["best"].get("params")
    if not isinstance(params, dict):
        raise InvalidValueError("--params must hold a JSON object of model settings")
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise InvalidValueError(
            f"--params has settings AlternatingLeastSquares does not take: {', '.join(unknown)}"
            f" (it takes {', '.join(sorted(PARAMS))})"
        )
    return params


def apply_reference_workflow(args, say):
    """Fill in the reference workflow's data, filter, new user and questions where not given."""
    args.data = REFERENCE["data"]
    if args.min_weight is None:
        args.min_weight = REFERENCE["min_weight"]
    if not (args.like or args.user or args.predict or args.similar or args.explain):
        for name in ("like", "predict", "similar", "explain"):
            setattr(args, name, list(REFERENCE[name]))
    who = f"a new user {args.user_name!r} who likes {len(args.like)} films" if args.like else ""
    say(
        f"no --data: the reference workflow on {args.data}, ratings >= {args.min_weight:g}"
        + (f", {who}" if who else "")
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
    if not 0 < fraction < 1:
        raise InvalidValueError(f"--test-fraction must be in (0, 1), got {fraction}")
    train, test = train_test_split(user_items, 1 - fraction, random_state=seed)
    if len(keep_rows):
        train, test = train.tolil(), test.tolil()
        for row in keep_rows:
            train[row] = user_items[row]
            test[row] = 0
        train, test = train.tocsr(), test.tocsr()
        test.eliminate_zeros()
    return train, test


def make_model(args, params=None):
    """The model the flags describe; ``params`` (from ``--params``) override them."""
    settings = {
        "factors": args.factors,
        "regularization": args.regularization,
        "alpha": args.alpha,
        "dtype": np.dtype(args.dtype),
        "iterations": args.iterations,
        "calculate_training_loss": True,
        "num_threads": args.threads,
        "random_state": args.seed,
        "backend": args.backend,
        "use_cg": args.cg_steps > 0,
        "cg_steps": args.cg_steps if args.cg_steps > 0 else None,
    }
    return AlternatingLeastSquares(**{**settings, **(params or {})})


def progress(args):
    """Whether to show a progress bar: for a terminal only (in a log it is noise around the
    one-line error), and never with --quiet."""
    return not args.quiet and sys.stderr.isatty()


def fit(model, train, args, say):
    """Fit ``model`` on ``train`` (on a cluster when asked); return per-iteration records."""
    seconds, losses = [], []

    def record(iteration, elapsed, loss):
        seconds.append(elapsed)
        losses.append(loss)

    if args.workers or args.scheduler:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise ImportError(
                "--workers and --scheduler need Dask: pip install 'dask[distributed]' "
                "(or the 'dask' extra of als)."
            ) from None
        from .distributed import fit_on_cluster

        fit_on_cluster(
            model,
            train,
            workers=args.workers,
            scheduler=args.scheduler,
            log=say,
            show_progress=progress(args),
            callback=record,
        )
    else:
        model.fit(train, show_progress=progress(args), callback=record)
    return iteration_record(model, train.nnz, seconds, losses, say)


def iteration_record(model, interactions, seconds, losses, say):
    """Say how a fit went and return it for the JSON summary."""
    per_iteration = float(np.median(seconds)) if seconds else 0.0
    say(
        f"{model.iterations} iterations, {per_iteration:.3f} s per iteration (median), "
        f"final loss {losses[-1]:.6f}"
        if losses
        else "0 iterations"
    )
    return {
        "factors": model.factors,
        "iterations": model.iterations,
        "interactions": int(interactions),
        "seconds_per_iteration": per_iteration,
        "iteration_seconds": seconds,
        "loss": losses,
    }


@user_errors
def main(argv):
    args = build_parser().parse_args(argv)
    if args.save:
        check_save_path(args.save)  # before training, not after
    if args.user is not None and args.like:
        raise InvalidValueError("give --user (an existing user) or --like (a new user), not both")
    report = sys.stderr if args.json else sys.stdout

    def say(text=""):
        print(text, file=report, flush=True)

    if args.data is None:
        apply_reference_workflow(args, say)
    started = time.perf_counter()
    if args.workers or args.scheduler:
        from .cluster_data import table_format

        if table_format(args.data):
            return train_on_workers(args, say, started)
    data = load_interactions(args)
    name = None
    if args.like:
        # integer ids (MovieLens) cannot hold a name: the user gets the next id, and the
        # report calls them by the name
        named = data.user_ids.dtype.kind in "OUS"
        data = data.add_user(
            args.like, weights=args.like_weight, user_id=args.user_name if named else None
        )
        user = data.n_users - 1
        name = args.user_name
    elif args.user is not None:
        user = data.user_index(args.user)
    else:
        user = 0
    say(data.summary())
    if name is not None and str(data.user_id(user)) != name:
        say(f"  - the new user {name!r} is user id {data.user_id(user)}")
    summary = {
        "parameters": {k: v for k, v in vars(args).items() if k not in ("debug", "quiet")},
        "seed": args.seed,
        "data": {
            "name": data.name,
            "users": data.n_users,
            "items": data.n_items,
            "interactions": data.nnz,
            "history": list(data.history),
            "load_seconds": time.perf_counter() - started,
        },
    }

    params = read_params(args.params) if args.params else {}
    if params:
        say(f"model settings from --params: {json.dumps(params)}")
        summary["params"] = params
    model = make_model(args, params)
    say(
        f"training on all {data.nnz:,} interactions with the {model.backend_name!r} backend, "
        f"seed {args.seed}"
    )
    with compile_note(lambda text: say(text + " ...")):
        record = fit(model, data.user_items, args, say)
        summary["training"] = {"backend": model.backend_name, **record}
        summary.update(answer(model, data, user, name, args, say))
        if args.evaluate:
            summary["evaluation"] = evaluate(data, user if args.like else None, args, params, say)
    if args.save:
        model.save(args.save, extra=data.to_arrays())
        say(f"saved the model and id maps to {args.save}")
        summary["saved"] = args.save
    summary["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def answer(model, data, user, name, args, say):
    """The questions the arguments ask, answered in the notebook's order.

    ``name`` is what the report calls a new user (None: an existing user, called by id).
    """
    answers = {"user": str(data.user_id(user)), "user_name": name}
    row = data.user_items[user]
    who = name or f"user {data.user_id(user)}"

    columns = [data.resolve_item(title) for title in args.predict]
    predictions = [predict_for_user(model, data, user, c) for c in columns]
    if predictions:
        say("")
        say(format_predictions(f"{who}'s predicted preference:", predictions))
    answers["predictions"] = predictions

    similar_titles = args.similar or args.like[:1]
    answers["similar"] = {}
    for title in similar_titles:
        column = data.resolve_item(title)
        similar = similar_to(model, data, column, N=min(args.count, 10))
        say("")
        say(format_ranking(f"most similar to {data.item_title(column)}:", similar))
        answers["similar"][data.item_title(column)] = similar

    ranking = recommend_for_row(model, data, row, N=args.count, userid=user)
    say("")
    say(format_ranking(f"top {args.count} for {who} (liked items left out):", ranking))
    answers["recommendations"] = ranking

    targets = [data.resolve_item(title) for title in args.explain]
    if not targets and ranking:
        targets = [data.item_index(ranking[0]["item"])]
    answers["explanations"] = {}
    for column in targets:
        explanation = explain_for_row(model, data, row, column)
        say("")
        say(format_explanation(f"why {who} would like {data.item_title(column)}:", explanation))
        answers["explanations"][data.item_title(column)] = explanation
    return answers


def evaluate(data, new_user, args, params, say):
    """A second model, fitted on a split, scored on the held-out interactions."""
    train, test = split(
        data.user_items, args.test_fraction, args.seed, [] if new_user is None else [new_user]
    )
    say("")
    say(
        f"evaluation: a second model trained on {train.nnz:,} interactions, "
        f"{args.test_fraction:.0%} held out ({test.nnz:,})"
    )
    model = make_model(args, params)
    record = fit(model, train, args, say)
    metrics = ranking_metrics_at_k(model, train, test, K=args.k, show_progress=False)
    say(
        f"held-out at k={args.k}: "
        + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
    )
    return {"test_fraction": args.test_fraction, "k": args.k, **metrics, "training": record}


def train_on_workers(args, say, started):
    """``--workers``/``--scheduler`` with a CSV or Parquet table: the workers read it, map the
    ids, build the blocks (and, with ``--evaluate``, hold out a hashed split); the client
    holds the id maps and the rows of the users it answers for or scores (``--eval-users``).
    """
    from .cluster_data import read_table, sample_rows, sampled_users, split_frame
    from .distributed import cluster_client, describe_cluster, encode_ids, partition_interactions
    from .interactions import Interactions

    if args.like or args.min_user_interactions > 1 or args.min_item_interactions > 1:
        raise InvalidValueError(
            "--like, --min-user-interactions and --min-item-interactions need the data on "
            "the client: leave out --workers/--scheduler, or filter the table beforehand"
        )
    frame = read_table(
        args.data,
        args.user_col or "user",
        args.item_col or "item",
        args.weight_col,
        sep=args.sep,
        min_weight=args.min_weight,
        skip_bad_lines=args.skip_bad_lines,
    )
    params = read_params(args.params) if args.params else {}
    if params:
        say(f"model settings from --params: {json.dumps(params)}")
    note = compile_note(lambda text: say(text + " ..."))
    with cluster_client(args.workers, args.scheduler) as client, note:
        say(describe_cluster(client, args.workers, args.scheduler))
        encoded, user_ids, item_ids = encode_ids(frame)
        shape = (len(user_ids), len(item_ids))
        ids = Interactions(scipy.sparse.csr_matrix(shape, dtype=np.float32), user_ids, item_ids)
        user = 0 if args.user is None else ids.user_index(args.user)
        blocked = partition_interactions(client, encoded, shape=shape)
        say(
            f"{args.data} read on the workers: {shape[0]:,} users x {shape[1]:,} items, "
            f"{blocked.nnz:,} interactions"
        )
        summary = {
            "parameters": {k: v for k, v in vars(args).items() if k not in ("debug", "quiet")},
            "seed": args.seed,
            "data": {
                "name": str(args.data),
                "users": shape[0],
                "items": shape[1],
                "interactions": blocked.nnz,
                "load_seconds": time.perf_counter() - started,
            },
        }
        model = make_model(args, params)
        say(f"training on all {blocked.nnz:,} interactions on the workers, seed {args.seed}")
        record = cluster_fit(client, model, blocked, args, say)
        summary["training"] = {"backend": model.backend_name, **record}
        data = Interactions(
            sample_rows(encoded, [user], shape), user_ids, item_ids, name=str(args.data)
        )
        if args.evaluate:
            train, test = split_frame(encoded, args.test_fraction, args.seed, shape[1])
            users = sampled_users(shape[0], args.eval_users, args.seed)
            say("")
            say(
                f"evaluation: a second model trained on the workers, {args.test_fraction:.0%} "
                f"held out by a hash of (user, item, seed), scored on {len(users):,} users"
            )
            scored = make_model(args, params)
            blocks = partition_interactions(client, train, shape=shape)
            evaluation = cluster_fit(client, scored, blocks, args, say)
            train, test = sample_rows(train, users, shape), sample_rows(test, users, shape)
    summary.update(answer(model, data, user, None, args, say))
    if args.evaluate:
        metrics = ranking_metrics_at_k(scored, train, test, K=args.k, show_progress=False)
        say(
            f"held-out at k={args.k}: "
            + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        )
        summary["evaluation"] = {
            "test_fraction": args.test_fraction,
            "k": args.k,
            "users": len(users),
            **metrics,
            "training": evaluation,
        }
    if args.save:
        model.save(args.save, extra=data.to_arrays(include_matrix=False))
        say(f"saved the model and id maps to {args.save}")
        summary["saved"] = args.save
    summary["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def cluster_fit(client, model, blocked, args, say):
    """Fit ``model`` on blocks already on the workers; the records ``fit`` returns."""
    from .distributed import fit_distributed

    seconds, losses = [], []

    def record(iteration, elapsed, loss):
        seconds.append(elapsed)
        losses.append(loss)

    fit_distributed(client, model, blocked, show_progress=progress(args), callback=record)
    return iteration_record(model, blocked.nnz, seconds, losses, say)


if __name__ == "__main__":
    sys.exit(main())
