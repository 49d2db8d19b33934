"""Where the Dask fit's blocks live: block ``b`` of both sides on worker ``b % W``.

Every task that reads or makes a block runs on the block's owner, so a block's interactions
and factors stay there; ``allow_other_workers`` lets the scheduler recompute a lost worker's
blocks elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidValueError

__all__ = ["WORKER_WAIT_SECONDS", "Placement", "cluster_workers"]

#: seconds to wait for a worker when the cluster has none (starting, or restarting one)
WORKER_WAIT_SECONDS = 60


def cluster_workers(client):
    """The sorted worker addresses of ``client``'s cluster, waiting for one if it has none.

    Raises
    ------
    InvalidValueError
        When no worker joins within ``WORKER_WAIT_SECONDS``.
    """
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError:
            raise InvalidValueError(
                f"the Dask cluster has no workers (waited {WORKER_WAIT_SECONDS} s for one)"
            ) from None
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    return workers


@dataclass(frozen=True)
class Placement:
    """Submits each block's tasks to the worker that owns the block.

    Attributes
    ----------
    client : distributed.Client
    owners : list of str
        Worker addresses; block ``b`` (of either side) belongs to ``owners[b % len(owners)]``.
    """

    client: object
    owners: list

    def owner(self, block):
        """The address of the worker that holds block ``block``."""
        return self.owners[block % len(self.owners)]

    def submit(self, block, function, *args, **options):
        """``client.submit(function, *args)`` on the owner of ``block``; returns the future."""
        return self.client.submit(
            function, *args, workers=[self.owner(block)], allow_other_workers=True, **options
        )
