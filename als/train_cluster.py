"""Where ``python -m als.train`` fits: in this process, or on Dask workers.

:func:`fit_here` fits on data held by this process (on a Dask cluster with ``--workers`` or
``--scheduler``, the data sent from here). :func:`train_on_workers` is the whole run when
the workers read a CSV or Parquet table themselves: they map the ids, build the blocks and
(with ``--evaluate``) hold out a hashed split; this process holds the id maps and the rows
of the users it answers for or scores (``--eval-users``). Both report through the same
:class:`als.train_run.TrainingRun`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from .answers import Questions, answer
from .cli_data import table_columns
from .errors import InvalidValueError
from .evaluation import ranking_metrics_at_k
from .interactions import Interactions
from .lookups import python_scalar
from .readers import read_titles_table

__all__ = ["fit_here", "require_dask", "train_on_workers"]


def require_dask():
    """Raise an ImportError naming the install command unless Dask's ``distributed`` is there."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ImportError(
            "--workers and --scheduler need Dask: pip install 'dask[distributed]' "
            "(or the 'dask' extra of als-recommender)."
        ) from None


def fit_here(run, model, user_items):
    """Fit ``model`` on ``user_items`` held here (sent to a cluster when the run names one)."""
    args = run.args
    if not (args.workers or args.scheduler):
        return run.fit(
            model,
            user_items.nnz,
            lambda record: model.fit(user_items, show_progress=run.show_progress, callback=record),
        )
    require_dask()
    from .distributed import fit_on_cluster

    cluster = {"workers": args.workers, "scheduler": args.scheduler, "log": run.say}

    def fit(record):
        fit_on_cluster(
            model, user_items, show_progress=run.show_progress, callback=record, **cluster
        )

    return run.fit(model, user_items.nnz, fit)


def refuse_client_options(args):
    """The options that need the data in this process, refused before any work."""
    if args.like or args.min_user_interactions > 1 or args.min_item_interactions > 1:
        raise InvalidValueError(
            "--like, --min-user-interactions and --min-item-interactions need the data on "
            "the client: leave out --workers/--scheduler, or filter the table beforehand"
        )
    if args.encoding:
        raise InvalidValueError(
            "--encoding: the workers read UTF-8 tables only: leave out --workers/--scheduler, "
            "or convert the table to UTF-8"
        )


def item_titles(args, item_ids):
    """The ``--titles`` of ``item_ids`` (``""`` where a title is missing), or None."""
    if not args.titles:
        return None
    titles = read_titles_table(args.titles)
    return np.asarray([titles.get(python_scalar(i), "") for i in item_ids], dtype=str)


def train_on_workers(args, run):
    """The run for a CSV or Parquet table that the workers read (see the module's text)."""
    require_dask()
    from .cluster_data import read_table, sample_rows
    from .distributed import cluster_client, describe_cluster, encode_ids, partition_interactions

    refuse_client_options(args)
    columns = table_columns(args, folders=True)
    user_col, item_col, weight_col = (
        (columns.user, columns.item, columns.weight)
        if columns is not None
        else (args.user_col or "user", args.item_col or "item", args.weight_col)
    )
    table = {"sep": args.sep, "min_weight": args.min_weight, "skip_bad_lines": args.skip_bad_lines}
    frame = read_table(args.data, user_col, item_col, weight_col, **table)
    run.say_params()
    with cluster_client(args.workers, args.scheduler) as client, run.compiling():
        run.say(describe_cluster(client, args.workers, args.scheduler))
        encoded, user_ids, item_ids = encode_ids(frame)
        shape = (len(user_ids), len(item_ids))
        titles = item_titles(args, item_ids)
        ids = Interactions(
            scipy.sparse.csr_matrix(shape, dtype=np.float32),
            user_ids,
            item_ids,
            titles,
            name=str(args.data),
        )
        user = 0 if args.user is None else ids.user_index(args.user)
        questions = Questions.ask(
            ids, user, None, args.predict, args.similar, args.explain, args.count
        )
        blocked = partition_interactions(client, encoded, shape=shape)
        run.say(
            f"{args.data} read on the workers: {shape[0]:,} users x {shape[1]:,} items, "
            f"{blocked.nnz:,} interactions"
        )
        if columns is not None:
            run.say(f"  - {columns.describe()}")
        run.loaded(args.data, shape, blocked.nnz, columns)
        model = run.model()
        run.say(f"training on all {blocked.nnz:,} interactions on the workers, seed {args.seed}")
        run.trained(model, fit_blocks(run, client, model, blocked))
        data = Interactions(
            sample_rows(encoded, [user], shape), user_ids, item_ids, titles, name=str(args.data)
        )
        if args.evaluate:
            scored = evaluate_on_workers(run, client, encoded, shape)
    run.summary.update(answer(model, data, questions, run.say))
    if args.evaluate:
        second, train, test, users, record = scored
        metrics = ranking_metrics_at_k(second, train, test, K=args.k, show_progress=False)
        run.held_out(metrics, record, users=len(users))
    if args.save:
        run.save(model, data.to_arrays(include_matrix=False))
    return run.finish()


def evaluate_on_workers(run, client, encoded, shape):
    """Fit a second model on the workers' hashed split; return it, the sampled users' train
    and test rows, those users and the fit's record (scored after the answers)."""
    from .cluster_data import sample_rows, sampled_users, split_frame
    from .distributed import partition_interactions

    args = run.args
    train, test = split_frame(encoded, args.test_fraction, args.seed, shape[1])
    users = sampled_users(shape[0], args.eval_users, args.seed)
    run.say("")
    run.say(
        f"evaluation: a second model trained on the workers, {args.test_fraction:.0%} "
        f"held out by a hash of (user, item, seed), scored on {len(users):,} users"
    )
    model = run.model()
    record = fit_blocks(run, client, model, partition_interactions(client, train, shape=shape))
    return model, sample_rows(train, users, shape), sample_rows(test, users, shape), users, record


def fit_blocks(run, client, model, blocked):
    """Fit ``model`` on blocks already on the workers; the record ``TrainingRun.fit`` keeps."""
    from .distributed import fit_distributed

    return run.fit(
        model,
        blocked.nnz,
        lambda record: fit_distributed(
            client, model, blocked, show_progress=run.show_progress, callback=record
        ),
    )
