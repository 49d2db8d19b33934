"""The ALS fit on a Dask cluster: interactions in blocks on the workers, factors in futures.

:func:`fit_distributed` trains an :class:`~als.model.AlternatingLeastSquares` on a
``dask.distributed.Client`` and leaves the learned factors in that ordinary model, which then
recommends, saves and loads as usual. How the blocks, their routes and the half-iterations
work, what travels between workers, and how a lost worker is recovered: docs/distributed.md.

The modules, in the order a fit uses them: ``intake`` (blocks from a matrix, a DataFrame or
Parquet files; raw ids to dense ids), ``routing`` (which user block each user joins, and
which rows each block sends where), ``initial`` (starting factors, drawn block by block),
``tasks`` (what runs on the workers), ``fit`` (the fit loop over the blocks), ``placement``
(which worker owns a block) and ``cluster`` (starting a cluster and fitting on it).

Examples
--------
>>> from dask.distributed import Client, LocalCluster          # doctest: +SKIP
>>> from als import AlternatingLeastSquares                     # doctest: +SKIP
>>> from als.distributed import fit_distributed                 # doctest: +SKIP
>>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
...     model = fit_distributed(client, AlternatingLeastSquares(random_state=0), user_items)
>>> model.recommend(0, user_items[0])                           # doctest: +SKIP
"""

from .cluster import cluster_client, describe_cluster, fit_on_cluster
from .fit import fit_distributed
from .initial import RANDOM_CHUNK_ELEMENTS, initial_factor_states
from .intake import LAYOUTS, BlockedInteractions, encode_ids, partition_interactions
from .placement import WORKER_WAIT_SECONDS

__all__ = [
    "BlockedInteractions",
    "partition_interactions",
    "fit_distributed",
    "fit_on_cluster",
    "cluster_client",
    "describe_cluster",
    "encode_ids",
    "initial_factor_states",
    "LAYOUTS",
    "RANDOM_CHUNK_ELEMENTS",
    "WORKER_WAIT_SECONDS",
]
