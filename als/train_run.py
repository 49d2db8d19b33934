"""One ``python -m als.train`` run: its model settings, its fits, its report and JSON summary.

Training on this machine and training on Dask workers go through the same
:class:`TrainingRun`: ``--params`` is read once, before any data; every fit is timed and said
the same way; held-out metrics, the saved model and the JSON summary are said and kept in one
place. The report goes to stdout, or to stderr with ``--json`` (stdout then holds the JSON).
"""

from __future__ import annotations

import inspect
import json
import sys
import time

import numpy as np

from .answers import counted
from .compile_note import compile_note
from .errors import InvalidValueError
from .model import AlternatingLeastSquares

__all__ = ["PARAMS", "TrainingRun", "make_model", "read_params"]

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


class TrainingRun:
    """What one run says, the models it makes, and the summary ``--json`` prints.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line; ``--params`` is read here, so a bad one fails first.
    """

    def __init__(self, args):
        self.args = args
        self.started = time.perf_counter()
        self.report = sys.stderr if args.json else sys.stdout
        self.params = read_params(args.params) if args.params else {}
        self.summary = {
            "parameters": {k: v for k, v in vars(args).items() if k not in ("debug", "quiet")},
            "seed": args.seed,
        }
        if self.params:
            self.summary["params"] = self.params

    def say(self, text=""):
        """Print one part of the report (flushed: a long fit follows some of them)."""
        print(text, file=self.report, flush=True)

    @property
    def show_progress(self):
        """Whether to show a progress bar: for a terminal only (in a log it is noise around
        the one-line error), and never with --quiet."""
        return not self.args.quiet and sys.stderr.isatty()

    def compiling(self):
        """A block in which a first compile of the kernels is said once."""
        return compile_note(lambda text: self.say(text + " ..."))

    def say_params(self):
        """Say the model settings ``--params`` gave, if it gave any."""
        if self.params:
            self.say(f"model settings from --params: {json.dumps(self.params)}")

    def model(self):
        """A new, unfitted model with the run's settings."""
        return make_model(self.args, self.params)

    def loaded(self, name, shape, interactions, columns=None, **details):
        """Keep what was loaded for the JSON: its size, the generic table's ``columns`` (see
        :func:`als.cli_data.table_columns`) and ``details`` (more fields, e.g. the history)."""
        self.summary["data"] = {
            "name": str(name),
            "users": int(shape[0]),
            "items": int(shape[1]),
            "interactions": int(interactions),
            **({} if columns is None else {"columns": columns.as_dict()}),
            **details,
            "load_seconds": time.perf_counter() - self.started,
        }

    def fit(self, model, interactions, fit):
        """Run ``fit(callback)``, which fits ``model`` on ``interactions`` entries calling
        ``callback(iteration, seconds, loss)``; say how it went and return the record."""
        seconds, losses = [], []

        def record(iteration, elapsed, loss):
            seconds.append(elapsed)
            losses.append(loss)

        fit(record)
        per_iteration = float(np.median(seconds)) if seconds else 0.0
        self.say(
            f"{counted(model.iterations, 'iteration')}, {per_iteration:.3f} s per iteration "
            f"(median), final loss {losses[-1]:.6f}"
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

    def trained(self, model, record):
        """Keep the record of the model that answers."""
        self.summary["training"] = {"backend": model.backend_name, **record}

    def held_out(self, metrics, record, **details):
        """Say and keep the held-out metrics of the second model (fitted as ``record`` says)."""
        k = self.args.k
        self.say(
            f"held-out at k={k}: "
            + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        )
        self.summary["evaluation"] = {
            "test_fraction": self.args.test_fraction,
            "k": k,
            **details,
            **metrics,
            "training": record,
        }

    def save(self, model, arrays):
        """Save ``model`` with ``arrays`` (the id maps) where ``--save`` says."""
        model.save(self.args.save, extra=arrays)
        self.say(f"saved the model and id maps to {self.args.save}")
        self.summary["saved"] = self.args.save

    def finish(self):
        """Print the JSON summary (with --json); return the exit status."""
        self.summary["seconds"] = time.perf_counter() - self.started
        if self.args.json:
            print(json.dumps(self.summary, indent=2))
        return 0
