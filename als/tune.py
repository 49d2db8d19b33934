"""``python -m als.tune``: search model settings with Optuna on a validation split.

The data are split as ``python -m als.train --evaluate`` splits them (``--test-fraction`` held
out for testing, by ``--seed``); a validation split is then carved from the training part, never
from the test part. Every trial fits on the rest of the training part and is scored by
NDCG at ``--k`` on the validation split. The best settings are refitted on the whole
training part and reported with their held-out test precision, MAP, NDCG and AUC at k,
and with the ``python -m als.train --evaluate`` command line that reproduces them.

Two search spaces:

- ``als`` (default): factors, regularization, alpha, iterations and the opt-in model
  options (the confidence function, the unobserved weight alpha0, the frequency exponent
  nu; initial factors as Rendle et al. 2022 draw them);
- ``implicit``: implicit's own parameters only (factors, regularization, alpha, iterations),
  for a like-for-like comparison.

Each search's first trial is its library's published recipe (``starting_point``); Optuna's
TPE sampler, seeded by ``--seed``, proposes the rest.

Examples
--------
    python -m als.tune --data ml-1m --min-weight 3 --trials 40 --minutes 20
    python -m als.tune --data lastfm-2k --space implicit --trials 40 --json > best.json
    python -m als.train --data ml-1m --min-weight 3 --params best.json --evaluate

Needs Optuna (``pip install 'als-recommender[tune]'``).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from . import cli_data
from .answers import counted
from .cli_args import OneLineParser, add_backend, number
from .cli_errors import user_errors
from .errors import ModelFitError, TunerUnavailable, UserError
from .evaluation import ranking_metrics_at_k, train_test_split
from .fitting import CONFIDENCE_FUNCTIONS
from .lookups import python_scalar
from .model import AlternatingLeastSquares
from .validation import check_choice, check_finite_real, check_positive_int

__all__ = ["SPACES", "Search", "TuneResult", "build_parser", "main", "suggest", "tune"]

SPACES = ("als", "implicit")

#: factor counts the search chooses from
FACTORS = (32, 64, 128, 192, 256)

#: the initialisation of the ``als`` space: Rendle et al. (2022) draw N(0, 0.1 / sqrt(d))
INIT_STDDEV = 0.1


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise TunerUnavailable(
            "python -m als.tune needs Optuna: pip install 'als-recommender[tune]' (or optuna)"
        ) from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def suggest(trial, space, user_items, max_factors=256, max_iterations=25):
    """The keyword arguments of ``AlternatingLeastSquares`` that ``trial`` proposes.

    In the ``als`` space lambda is searched as the regularisation a user of average
    activity gets, ``lambda * (mean n_u + alpha0 * n_items) ** nu``, and converted back: it
    keeps the best lambda from moving by orders of magnitude whenever nu moves.
    """
    params = {
        "factors": trial.suggest_categorical("factors", factor_choices(max_factors)),
        "iterations": trial.suggest_int("iterations", min(3, max_iterations), max_iterations),
        "alpha": trial.suggest_float("alpha", 1e-3, 1e2, log=True),
    }
    if space == "implicit":
        params["regularization"] = trial.suggest_float("regularization", 1e-4, 1e2, log=True)
        return params
    params["confidence"] = trial.suggest_categorical("confidence", CONFIDENCE_FUNCTIONS)
    if params["confidence"] == "log":
        params["epsilon"] = trial.suggest_float("epsilon", 1e-2, 1e2, log=True)
    params["alpha0"] = trial.suggest_float("alpha0", 1e-3, 1.0, log=True)
    params["nu"] = trial.suggest_float("nu", 0.0, 1.25)
    row_lambda = trial.suggest_float("row_regularization", 1e-4, 1e3, log=True)
    typical = typical_row(user_items, params["alpha0"])
    params["regularization"] = row_lambda / typical ** params["nu"]
    params["init_stddev"] = INIT_STDDEV
    return params


def factor_choices(max_factors):
    """The factor counts of ``FACTORS`` up to ``max_factors`` (itself when none is)."""
    return tuple(f for f in FACTORS if f <= max_factors) or (max_factors,)


def typical_row(user_items, alpha0):
    """``mean n_u + alpha0 * n_items``: what ``nu`` raises for a user of average activity."""
    n_users, n_items = user_items.shape
    return user_items.nnz / max(n_users, 1) + alpha0 * n_items


def starting_point(space, user_items, max_factors=256, max_iterations=25):
    """The first trial of a search: each space starts from its library's published recipe.

    ``implicit``: the notebook's settings (lambda 0.01, alpha 1, 15 iterations) at 64
    factors. ``als``: the google-research iALS settings for ML-20M (Rendle et al. 2022:
    binary confidence, alpha0 0.1, lambda 0.003, nu 1, N(0, 0.1 / sqrt(d)) initialisation).
    """
    start = {"factors": max(factor_choices(max_factors)[:2]), "iterations": min(15, max_iterations)}
    if space == "implicit":
        return {**start, "alpha": 1.0, "regularization": 0.01}
    row_lambda = 0.003 * typical_row(user_items, 0.1)
    # hkv with a tiny alpha: every stored entry weighs about 1, as in the paper
    return {**start, "alpha": 1e-3, "confidence": "hkv", "alpha0": 0.1, "nu": 1.0,
            "row_regularization": row_lambda}  # fmt: skip


@dataclasses.dataclass
class TuneResult:
    """What ``tune`` found: the best parameters and every trial."""

    best_params: dict
    best_value: float
    trials: list


def fit_model(params, user_items, seed=0, backend="auto", threads=0, callback=None):
    """Fit ``AlternatingLeastSquares(**params)`` on ``user_items`` quietly."""
    model = AlternatingLeastSquares(
        **params, random_state=seed, backend=backend, num_threads=threads
    )
    return model.fit(user_items, show_progress=False, callback=callback)


@dataclasses.dataclass(frozen=True)
class Search:
    """How one search runs: its space, budget, scoring, model limits and where it computes.

    Parameters
    ----------
    space : {"als", "implicit"}
    trials : int
        Trials to run (fewer when ``minutes`` runs out first).
    minutes : float, optional
        Stop starting trials after this many minutes.
    seed : int
        Seeds the validation split (``seed`` + 1), the sampler and every model.
    k : int
        Cutoff of the validation NDCG.
    validation_fraction : float
        Share of the training part the trials are scored on, in (0, 1).
    max_factors, max_iterations : int
        The largest factor count and iteration count a trial may propose.
    backend : str
        The backend of every fit.
    threads : int
        CPU threads, 0 for all cores.

    Raises
    ------
    InvalidValueError, InvalidTypeError
        For a setting out of its range, named as the argument of :func:`tune`.
    """

    space: str = "als"
    trials: int = 20
    minutes: float | None = None
    seed: int = 0
    k: int = 10
    validation_fraction: float = 0.2
    max_factors: int = 256
    max_iterations: int = 25
    backend: str = "auto"
    threads: int = 0

    def __post_init__(self):
        check_choice(self.space, SPACES, "space")
        check_positive_int(self.trials, "trials")
        check_positive_int(self.max_factors, "max_factors")
        check_positive_int(self.max_iterations, "max_iterations")
        check_finite_real(
            self.validation_fraction,
            "validation_fraction",
            exclusive_minimum=0,
            exclusive_maximum=1,
        )


def tune(train, space="als", *, show_progress=True, **settings):
    """Search the settings that maximise validation NDCG at ``k``, with Optuna's TPE.

    Parameters
    ----------
    train : scipy.sparse.csr_matrix
        The training part; the validation split is carved from it (``seed`` + 1).
    space : {"als", "implicit"}
    show_progress : bool
        Show a progress bar of the trials.
    **settings
        The other fields of :class:`Search` (``trials``, ``minutes``, ``seed``, ``k``,
        ``validation_fraction``, ``backend``, ``threads``, ``max_factors``,
        ``max_iterations``).

    Returns
    -------
    TuneResult
    """
    optuna = _optuna()
    search = Search(space, **settings)
    seed, k = search.seed, search.k
    limits = (search.max_factors, search.max_iterations)
    fraction = search.validation_fraction
    fit_part, validation = train_test_split(train, 1 - fraction, random_state=seed + 1)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(starting_point(search.space, fit_part, *limits))

    def objective(trial):
        params = suggest(trial, search.space, fit_part, *limits)
        started = time.perf_counter()
        model = fit_model(params, fit_part, seed, search.backend, search.threads)
        trial.set_user_attr("fit_seconds", time.perf_counter() - started)
        trial.set_user_attr("params", params)
        return ranking_metrics_at_k(model, fit_part, validation, K=k, show_progress=False)["ndcg"]

    with tqdm(
        total=search.trials, disable=not show_progress, desc=f"tuning ({search.space})"
    ) as bar:

        def progress(study, trial):
            bar.update(1)
            completed = [t for t in study.trials if t.value is not None]
            if completed:
                bar.set_postfix({f"best ndcg@{k}": f"{study.best_value:.4f}"})

        study.optimize(
            objective,
            n_trials=search.trials,
            timeout=None if search.minutes is None else 60 * search.minutes,
            callbacks=[progress],
            catch=(ModelFitError,),
        )
    records = [
        {
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "params": t.user_attrs.get("params"),
            "fit_seconds": t.user_attrs.get("fit_seconds"),
        }
        for t in study.trials
    ]
    if not any(t.value is not None for t in study.trials):
        raise ModelFitError("no trial finished: every fit failed (see the trials)")
    return TuneResult(study.best_trial.user_attrs["params"], study.best_value, records)


DESCRIPTION = (
    "Search model settings with Optuna: every trial fits on part of the training split and "
    "is scored by NDCG on a validation split carved from it; the best settings are refitted "
    "and scored on the held-out test split, with the python -m als.train command line that "
    "reproduces them. Needs Optuna."
)

DATA_HELP = (
    "the data to tune on (required): a known data set (ml-1m, ml-100k, lastfm-2k, ml-20m, "
    "...) or a path to a folder, ratings file, CSV or Parquet table"
)


def build_parser():
    """The parser of ``python -m als.tune``: data, search and output options."""
    parser = OneLineParser(prog="python -m als.tune", description=DESCRIPTION)
    cli_data.add_data_arguments(parser, DATA_HELP)
    add_search_arguments(parser)
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        help="print the best settings, their metrics, every trial and the reproducing "
        "command as JSON on stdout (the report goes to stderr)",
    )
    output.add_argument("--quiet", action="store_true", help="no progress bar of the trials")
    output.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def add_search_arguments(parser):
    """What is searched, for how long, how trials are scored, and where they compute."""
    search = parser.add_argument_group("search")
    search.add_argument(
        "--trials", type=number(int, 1), default=20, help="model fits to try, at most"
    )
    search.add_argument(
        "--minutes",
        type=number(float, above=0),
        help="start no trial after this many minutes; without it, run every trial",
    )
    search.add_argument(
        "--space",
        default="als",
        choices=SPACES,
        help="als: factors, regularization, alpha, iterations and the opt-in model options; "
        "implicit: implicit's four parameters only",
    )
    search.add_argument(
        "--seed",
        default=0,
        type=number(int, 0),
        help="seeds the splits (the test one as als.train --evaluate's), the sampler, the models",
    )
    cli_data.add_split_arguments(
        search, "share of interactions held out to test the best settings, never seen by a trial"
    )
    search.add_argument(
        "--validation-fraction",
        type=number(float, above=0, below=1),
        default=0.2,
        help="share of the training part the trials are scored on (NDCG at --k)",
    )
    for flag, default, what in (
        ("--max-factors", 256, "factor count (of 32, 64, 128, 192, 256)"),
        ("--max-iterations", 25, "iteration count (from 3 up)"),
    ):
        search.add_argument(
            flag, type=number(int, 1), default=default, help=f"largest {what} a trial may try"
        )
    add_backend(search, "where every trial fits: auto picks cuda when a GPU is usable, else cpu")
    search.add_argument(
        "--threads", type=number(int, 0), default=0, help="CPU threads, 0 = all cores"
    )


#: data options passed on to the reproducing als.train command
_DATA_FLAGS = (
    "data",
    "user_col",
    "item_col",
    "weight_col",
    "titles",
    "sep",
    "encoding",
    "min_weight",
    "min_user_interactions",
    "min_item_interactions",
)


def reproducing_command(args, params):
    """The ``python -m als.train`` command line that fits ``params`` on the same split."""
    words = ["python", "-m", "als.train"]
    for name in _DATA_FLAGS:
        value = getattr(args, name, None)
        if value is None or (name.startswith("min_") and name.endswith("s") and value <= 1):
            continue
        text = f"{value:g}" if isinstance(value, float) else str(value)
        words += ["--" + name.replace("_", "-"), text]
    if args.skip_bad_lines:
        words.append("--skip-bad-lines")
    words += ["--evaluate", "--seed", str(args.seed), "--test-fraction", f"{args.test_fraction:g}"]
    words += ["--k", str(args.k), "--params", json.dumps(params, sort_keys=True)]
    return shlex.join(words)


@user_errors
def main(argv):
    args = build_parser().parse_args(argv)
    if args.data is None:
        raise UserError("--data is required: a data set name or a path")
    report = sys.stderr if args.json else sys.stdout
    _optuna()  # fail before loading data when Optuna is missing
    columns = cli_data.table_columns(args)
    data = cli_data.load_interactions(args, columns)
    print(cli_data.describe_data(data, columns), file=report)
    train, test = cli_data.split(data.user_items, args.test_fraction, args.seed)
    settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(Search)}
    result = tune(train, show_progress=not args.quiet, **settings)
    started = time.perf_counter()
    model = fit_model(result.best_params, train, args.seed, args.backend, args.threads)
    fit_seconds = time.perf_counter() - started
    metrics = ranking_metrics_at_k(model, train, test, K=args.k, show_progress=False)
    metrics = {"k": args.k, **metrics, "validation_ndcg": result.best_value}
    command = reproducing_command(args, result.best_params)
    done = sum(t["state"] == "complete" for t in result.trials)
    print(
        f"{done} of {counted(len(result.trials), 'trial')} finished ({args.space} space)",
        file=report,
    )
    print(f"best settings: {json.dumps(result.best_params, sort_keys=True)}", file=report)
    print(
        f"held-out test at k={args.k}: "
        + ", ".join(f"{n} {metrics[n]:.4f}" for n in ("precision", "map", "ndcg", "auc"))
        + f" (validation ndcg {result.best_value:.4f}, refit {fit_seconds:.1f} s)",
        file=report,
    )
    print(f"reproduce with:\n  {command}", file=report)
    if args.json:
        summary = {
            "best": {"params": result.best_params, "metrics": metrics},
            "trials": result.trials,
            "space": args.space,
            "command": command,
        }
        print(json.dumps(summary, indent=2, default=_plain))
    return 0


def _plain(value):
    """JSON's ``default``: a NumPy scalar (Optuna's, in the trial records) as its Python value."""
    if isinstance(value, np.generic):
        return python_scalar(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
