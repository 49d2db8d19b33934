"""``python -m als.recommend MODEL``: answer from a saved model, without retraining.

The model file is one written by ``python -m als.train --save`` (the model and the data's
id maps and interactions). Examples::

    python -m als.recommend model.npz --user 42
    python -m als.recommend model.npz --like "Heat (1995)" --like "Fargo (1996)"
    python -m als.recommend model.npz --similar "Fargo (1996)"
    python -m als.recommend model.npz --user 42 --explain "Heat (1995)"
"""

from __future__ import annotations

import json
import sys

from .answers import (
    explain_for_row,
    format_explanation,
    format_ranking,
    recommend_for_row,
    similar_to,
)
from .cli_args import OneLineParser, add_backend, add_count, add_repeatable, number
from .cli_errors import user_errors
from .data import Interactions
from .errors import InvalidValueError
from .model import AlternatingLeastSquares

DESCRIPTION = (
    "Answer from a model saved by python -m als.train --save, without retraining: "
    "recommendations for a user or for a new one, similar items, explanations."
)


def build_parser():
    parser = OneLineParser(prog="python -m als.recommend", description=DESCRIPTION)
    parser.add_argument("model", help="a .npz written by python -m als.train --save")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--user", metavar="ID", help="recommend for this user (raw id)")
    add_repeatable(who, "--like", "recommend for a new user who likes this item; repeatable")
    parser.add_argument(
        "--like-weight",
        type=number(float, above=0),
        default=5.0,
        help="weight of each --like interaction",
    )
    add_repeatable(parser, "--similar", "print the items most similar to this one; repeatable")
    add_repeatable(
        parser, "--explain", "explain the user's score for this item (needs --user or --like)"
    )
    add_count(parser, "how many recommendations and similar items to print")
    add_backend(parser, "where to answer: auto picks cuda when a GPU is usable, else cpu")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def load_saved(path, backend="auto"):
    """Return (model, Interactions) from a file written by ``als.train --save``."""
    model, extra = AlternatingLeastSquares.load(path, backend=backend, return_extra=True)
    if not extra:
        raise InvalidValueError(
            f"{path} holds a model but no id maps: save it with python -m als.train --save"
        )
    data = Interactions.from_arrays(extra)
    if data.shape != (len(model.user_factors), len(model.item_factors)):
        raise InvalidValueError(
            f"{path} is inconsistent: id maps for {data.shape} users x items, factors for "
            f"{len(model.user_factors)} x {len(model.item_factors)}"
        )
    return model, data


@user_errors
def main(argv):
    args = build_parser().parse_args(argv)
    if not (args.user or args.like or args.similar or args.explain):
        raise InvalidValueError("nothing to answer: give --user, --like, --similar or --explain")
    if args.explain and not (args.user or args.like):
        raise InvalidValueError("--explain needs a user: give --user or --like")
    model, data = load_saved(args.model, args.backend)
    # every title looked up before any answer is computed
    similar = [data.resolve_item(title) for title in args.similar]
    explain = [data.resolve_item(title) for title in args.explain]
    output = {}
    lines = []
    row, userid, who = None, None, None
    if args.user is not None:
        userid = data.user_index(args.user)
        row, who = data.user_items[userid], f"user {args.user}"
    elif args.like:
        row, who = data.user_row(args.like, weights=args.like_weight), "a new user"
    if row is not None:
        ranking = recommend_for_row(model, data, row, N=args.count, userid=userid)
        lines.append(format_ranking(f"top {args.count} for {who}:", ranking))
        output["recommendations"] = ranking
    for title, column in zip(args.similar, similar, strict=True):
        answers = similar_to(model, data, column, N=args.count)
        lines.append(format_ranking(f"most similar to {data.item_title(column)}:", answers))
        output.setdefault("similar", {})[title] = answers
    for title, column in zip(args.explain, explain, strict=True):
        explanation = explain_for_row(model, data, row, column, userid=userid)
        heading = f"why {who} would like {data.item_title(column)}:"
        lines.append(format_explanation(heading, explanation, who))
        output.setdefault("explanations", {})[title] = explanation
    print(json.dumps(output, indent=2) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
