"""Starting a Dask cluster (or joining one) and fitting on it: what ``als.train`` calls."""

from __future__ import annotations

import contextlib

from ..errors import InvalidValueError
from ..validation import check_positive_int
from .fit import fit_distributed
from .placement import cluster_workers

__all__ = ["cluster_client", "describe_cluster", "fit_on_cluster"]


@contextlib.contextmanager
def cluster_client(workers=None, scheduler=None, memory_limit="auto"):
    """A ``Client`` of a new ``LocalCluster`` of ``workers`` processes, or of ``scheduler``.

    Local workers run one Dask thread each: a solve task takes its cores as Numba threads
    (``model.num_threads``), and one task runs per block on its owner. The cluster closes
    on exit.

    Raises
    ------
    InvalidValueError
        Unless exactly one of ``workers`` and ``scheduler`` is given.
    """
    if bool(workers) == bool(scheduler):
        raise InvalidValueError("give either workers (a local cluster) or scheduler (an address)")
    if workers:
        check_positive_int(workers, "workers")
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def fit_on_cluster(model, user_items, *, workers=None, scheduler=None, log=None, **options):
    """Fit on a new ``LocalCluster`` of ``workers`` processes, or on the cluster at ``scheduler``.

    ``options`` go to :func:`als.distributed.fit_distributed`; ``log`` (e.g. ``print``)
    hears one line about the cluster. Returns the fitted ``model``.
    """
    with cluster_client(workers, scheduler) as client:
        if log:
            log(describe_cluster(client, workers, scheduler))
        return fit_distributed(client, model, user_items, **options)


def describe_cluster(client, workers=None, scheduler=None):
    """One line about the cluster a ``Client`` of :func:`cluster_client` is on."""
    plural = {1: ""}
    where = scheduler or f"a local cluster of {workers} worker process{plural.get(workers, 'es')}"
    count = len(cluster_workers(client))
    return f"fitting on {where} ({count} worker{plural.get(count, 's')})"
