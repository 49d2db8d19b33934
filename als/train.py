"""``python -m als.train``: load interactions, train, and answer, in one command.

Without ``--data`` it runs the reference MovieLens-1M workflow: keep ratings >= 3 (the
rating is the confidence), add a new user, ``braum``, who gave 5 to five films, fit 15
iterations with 100 factors and regularization 0.01 on all the interactions, then print
braum's predicted preference for Forrest Gump and for Toy Story, the films most similar to
Forrest Gump, braum's top 20 (liked films left out) and why braum would like Forrest Gump.
``--evaluate`` adds a second, separate fit on 80% of the interactions and reports precision,
MAP, NDCG and AUC on the other 20%; the answers always come from the model trained on
everything.

Everything that can be checked is checked before the fit: the options, ``--params``, the
``--save`` path, a generic table's columns (from its header, before it is read in full),
the user and every title the answers name.

Examples
--------
    python -m als.train                                     # the reference workflow
    python -m als.train --evaluate                          # ... and held-out metrics
    python -m als.train --data ml-100k --factors 64 --save model.npz
    python -m als.train --data plays.csv --user-col user --item-col track --weight-col plays
    python -m als.train --like "Heat" --like "Fargo" --similar "Fargo" --explain "Casino"
"""

from __future__ import annotations

import sys

from .answers import Questions, answer, counted
from .cli_args import OneLineParser, add_backend, add_count, add_repeatable, number
from .cli_data import (
    add_data_arguments,
    add_split_arguments,
    describe_data,
    load_interactions,
    split,
    table_columns,
)
from .cli_errors import user_errors
from .cluster_data import table_format
from .errors import InvalidValueError
from .evaluation import ranking_metrics_at_k
from .persistence import check_save_path
from .train_cluster import fit_here, train_on_workers
from .train_run import TrainingRun

__all__ = ["REFERENCE", "build_parser", "main"]

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

DESCRIPTION = (
    "Load interactions, train an implicit-feedback ALS model, and answer with it, in one "
    "command. Without --data: the reference workflow (ml-1m, ratings >= 3, a new user "
    "'braum' with five films, 15 iterations, 100 factors, trained on all interactions). "
    "Options, titles and columns are checked before the fit."
)

DATA_HELP = (
    "a known data set (ml-1m, ml-100k, lastfm-2k, ml-20m, ...) or a path to a folder, "
    "ratings file, CSV or Parquet table; without it, the reference workflow: ml-1m, "
    "--min-weight 3, braum's five films as --like, and the notebook's questions"
)


def build_parser():
    """The parser of ``python -m als.train``, one argument group at a time."""
    parser = OneLineParser(prog="python -m als.train", description=DESCRIPTION)
    add_data_arguments(parser, DATA_HELP)
    add_model_arguments(parser)
    add_evaluation_arguments(parser)
    add_answer_arguments(parser)
    add_output_arguments(parser)
    return parser


def add_model_arguments(parser):
    """The model's settings, where it computes, and the Dask cluster it may fit on."""
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
    add_backend(model, "where to compute: auto picks cuda when a GPU is usable, else cpu")
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
        help="fit on a local Dask cluster of this many worker processes; without it (and "
        "without --scheduler), fit in this process",
    )
    cluster.add_argument(
        "--scheduler", metavar="ADDRESS", help="fit on the Dask cluster at this address"
    )


def add_evaluation_arguments(parser):
    """``--evaluate`` and how it splits and scores."""
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--evaluate",
        action="store_true",
        help="also fit a second model on a split and report held-out metrics; the answers "
        "still come from the model trained on all interactions",
    )
    add_split_arguments(evaluation, "share of interactions --evaluate holds out")
    evaluation.add_argument(
        "--eval-users",
        type=number(int, 1),
        default=10_000,
        help="with --workers/--scheduler and a CSV or Parquet table (read on the workers): "
        "--evaluate scores this many sampled users, whose rows alone come to the client",
    )


def add_answer_arguments(parser):
    """Whom the answers are for, and what they say."""
    answers = parser.add_argument_group(
        "answers", "for --user, for the new user of --like, or else for the data's first user"
    )
    answers.add_argument("--user", metavar="ID", help="answer for this existing user (raw id)")
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
        answers, "--predict", "print the user's predicted preference for this item; repeatable"
    )
    add_repeatable(
        answers,
        "--similar",
        "print the items most similar to this one; repeatable; without it, those most "
        "similar to the first --like",
    )
    add_repeatable(
        answers,
        "--explain",
        "explain the user's score for this item; repeatable; without it, their top recommendation",
    )
    add_count(answers, "how many recommendations to print (similar items: at most 10)")


def add_output_arguments(parser):
    """Where the report and the model go."""
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


def apply_reference_workflow(args, say):
    """Fill in the reference workflow's data, filter, new user and questions where not given."""
    args.data = REFERENCE["data"]
    if args.min_weight is None:
        args.min_weight = REFERENCE["min_weight"]
    if not (args.like or args.user or args.predict or args.similar or args.explain):
        for name in ("like", "predict", "similar", "explain"):
            setattr(args, name, list(REFERENCE[name]))
    who = (
        f", a new user {args.user_name!r} who likes {counted(len(args.like), 'film')}"
        if args.like
        else ""
    )
    say(f"no --data: the reference workflow on {args.data}, ratings >= {args.min_weight:g}{who}")


def with_user(data, args):
    """``data`` with the user the answers are for, that user's row, and a new user's name."""
    if args.like:
        # integer ids (MovieLens) cannot hold a name: the user gets the next id, and the
        # report calls them by the name
        named = data.user_ids.dtype.kind in "OUS"
        data = data.add_user(
            args.like, weights=args.like_weight, user_id=args.user_name if named else None
        )
        return data, data.n_users - 1, args.user_name
    return data, 0 if args.user is None else data.user_index(args.user), None


@user_errors
def main(argv):
    args = build_parser().parse_args(argv)
    if args.save:
        check_save_path(args.save)  # before training, not after
    if args.user is not None and args.like:
        raise InvalidValueError("give --user (an existing user) or --like (a new user), not both")
    run = TrainingRun(args)
    if args.data is None:
        apply_reference_workflow(args, run.say)
    if (args.workers or args.scheduler) and table_format(args.data):
        return train_on_workers(args, run)
    columns = table_columns(args)
    data, user, name = with_user(load_interactions(args, columns), args)
    questions = Questions.ask(
        data, user, name, args.predict, args.similar or args.like[:1], args.explain, args.count
    )
    run.say(describe_data(data, columns))
    if name is not None and str(data.user_id(user)) != name:
        run.say(f"  - the new user {name!r} is user id {data.user_id(user)}")
    run.loaded(data.name, data.shape, data.nnz, columns, history=list(data.history))
    run.say_params()
    model = run.model()
    run.say(
        f"training on all {data.nnz:,} interactions with the {model.backend_name!r} backend, "
        f"seed {args.seed}"
    )
    with run.compiling():
        run.trained(model, fit_here(run, model, data.user_items))
        run.summary.update(answer(model, data, questions, run.say))
        if args.evaluate:
            evaluate(run, data, user if args.like else None)
    if args.save:
        run.save(model, data.to_arrays())
    return run.finish()


def evaluate(run, data, new_user):
    """A second model, fitted on a split, scored on the held-out interactions."""
    args = run.args
    train, test = split(
        data.user_items, args.test_fraction, args.seed, [] if new_user is None else [new_user]
    )
    run.say("")
    run.say(
        f"evaluation: a second model trained on {train.nnz:,} interactions, "
        f"{args.test_fraction:.0%} held out ({test.nnz:,})"
    )
    model = run.model()
    record = fit_here(run, model, train)
    run.held_out(ranking_metrics_at_k(model, train, test, K=args.k, show_progress=False), record)


if __name__ == "__main__":
    sys.exit(main())
