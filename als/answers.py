"""Questions a person asks a trained model, answered with titles: used by both CLIs.

``als.train`` (train, then answer) and ``als.recommend`` (answer from a saved model) share
these functions, so the two commands print and serialise the same things the same way. Each
function returns plain dicts (ready for ``--json``); ``format_*`` turns them into text.
:class:`Questions` holds what a training run will ask, with every title already looked up,
so that a mistyped title fails before the fit rather than after it; :func:`answer` asks them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .lookups import python_scalar

__all__ = [
    "Questions",
    "answer",
    "counted",
    "explain_for_row",
    "format_explanation",
    "format_predictions",
    "format_ranking",
    "predict_for_user",
    "recommend_for_row",
    "similar_to",
]


def counted(number, noun, plural=None):
    """``number`` and ``noun``, the noun plural unless there is one: "1 film", "5 films"."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def _item(data, column, score):
    return {
        "item": python_scalar(data.item_id(int(column))),
        "title": data.item_title(int(column)),
        "score": float(score),
    }


def recommend_for_row(model, data, row, N=20, userid=None):
    """Top ``N`` items for a user, never one they already have in ``row``.

    Parameters
    ----------
    model : AlternatingLeastSquares
    data : Interactions
        Gives ids and titles to item columns.
    row : csr_matrix, shape (1, n_items)
        The user's interactions.
    N : int
    userid : int, optional
        The user's row in the model; None computes their factors from ``row`` instead.
    """
    recalculate = userid is None
    ids, scores = model.recommend(
        0 if recalculate else userid, row, N=N, recalculate_user=recalculate
    )
    return [_item(data, i, s) for i, s in zip(ids, scores, strict=True)]


def predict_for_user(model, data, userid, column):
    """A user's predicted preference for item ``column``: their factors dot the item's."""
    user, item = model.user_factors[userid], model.item_factors[column]
    return _item(data, column, np.dot(user.astype(np.float64), item.astype(np.float64)))


def similar_to(model, data, column, N=10):
    """The ``N`` items most similar to item ``column`` (the item itself excluded)."""
    ids, scores = model.similar_items(column, N=N + 1)
    return [_item(data, i, s) for i, s in zip(ids, scores, strict=True) if i != column][:N]


def explain_for_row(model, data, row, column, N=10, userid=None):
    """Why a user with interactions ``row`` would score item ``column`` as they do.

    The explanation solves the user's factors afresh, exactly, against the final item
    factors (Hu, Koren, Volinsky 2008, section 5), so its score differs a little from the
    trained factors' prediction: those were solved before the fit's last item update. Given
    ``userid`` (the user's row in the model), that prediction comes as ``trained_score``.
    """
    total, contributions, _ = model.explain(0, row, column, N=N)
    explanation = {
        **_item(data, column, total),
        "because_of": [_item(data, i, s) for i, s in contributions],
    }
    if userid is not None:
        explanation["trained_score"] = predict_for_user(model, data, userid, column)["score"]
    return explanation


def format_ranking(heading, ranking):
    """A numbered list of items with scores, under a heading."""
    lines = [heading]
    for rank, entry in enumerate(ranking, start=1):
        lines.append(f"  {rank:>3}. {entry['score']:8.4f}  {entry['title']}")
    if not ranking:
        lines.append("  (nothing to show)")
    return "\n".join(lines)


def format_predictions(heading, predictions):
    """One line per item: the predicted preference, then the title."""
    lines = [heading]
    for entry in predictions:
        lines.append(f"  {entry['score']:8.4f}  {entry['title']}")
    return "\n".join(lines)


def format_explanation(heading, explanation, who="the user"):
    """The score, the liked items that contribute most to it, and where it comes from."""
    score, trained = explanation["score"], explanation.get("trained_score")
    if trained is None:
        lines = [heading, f"  predicted score {score:.4f}, mostly because of:"]
    else:
        lines = [
            heading,
            f"  score {score:.4f}, from {who}'s factors solved exactly for the final item factors",
            f"  (the trained factors predict {trained:.4f}); mostly because of:",
        ]
    for entry in explanation["because_of"]:
        lines.append(f"    {entry['score']:+8.4f}  {entry['title']}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Questions:
    """What a training run asks its model about one user, items looked up as columns.

    Attributes
    ----------
    user : int
        The user's row.
    who : str
        What the report calls the user ("braum", "user 42").
    name : str or None
        The name given to a new user (None: an existing user).
    predict, similar, explain : tuple of int
        Item columns: predicted preferences, items similar to each, explanations (empty:
        the user's top recommendation).
    count : int
        How many recommendations (similar items: at most 10).
    """

    user: int
    who: str
    name: str | None = None
    predict: tuple = ()
    similar: tuple = ()
    explain: tuple = ()
    count: int = 20

    @classmethod
    def ask(cls, data, user, name, predict=(), similar=(), explain=(), count=20):
        """Look every title up in ``data`` now (an unknown one raises before any training).

        ``name`` is what the report calls a new user (None: an existing user, called by id).
        """
        columns = [
            tuple(data.resolve_item(title) for title in titles)
            for titles in (predict, similar, explain)
        ]
        who = name or f"user {data.user_id(user)}"
        return cls(user, who, name, *columns, count=count)


def answer(model, data, questions, say):
    """Answer ``questions`` in the reference notebook's order; return them for the JSON.

    Predictions, similar items, the top recommendations (liked items left out), then the
    explanations, each said under a plain heading.
    """
    who, user = questions.who, questions.user
    row = data.user_items[user]
    answers = {"user": str(data.user_id(user)), "user_name": questions.name}
    predictions = [predict_for_user(model, data, user, c) for c in questions.predict]
    if predictions:
        say("")
        say(format_predictions(f"{who}'s predicted preference:", predictions))
    answers["predictions"] = predictions

    answers["similar"] = {}
    for column in questions.similar:
        similar = similar_to(model, data, column, N=min(questions.count, 10))
        say("")
        say(format_ranking(f"most similar to {data.item_title(column)}:", similar))
        answers["similar"][data.item_title(column)] = similar

    ranking = recommend_for_row(model, data, row, N=questions.count, userid=user)
    say("")
    say(format_ranking(f"top {questions.count} for {who} (liked items left out):", ranking))
    answers["recommendations"] = ranking

    targets = questions.explain or [data.item_index(entry["item"]) for entry in ranking[:1]]
    answers["explanations"] = {}
    for column in targets:
        explanation = explain_for_row(model, data, row, column, userid=user)
        heading = f"why {who} would like {data.item_title(column)}:"
        say("")
        say(format_explanation(heading, explanation, who))
        answers["explanations"][data.item_title(column)] = explanation
    return answers
