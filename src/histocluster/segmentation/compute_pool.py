"""Where the segmentation pass's tasks run: in the run's own process, on a Dask
``LocalCluster`` of worker processes on this machine, or on a Dask cluster elsewhere.

Each task is a run of tile batches of one slide (:func:`~histocluster.segmentation.tile_pass.
segment_chunk`); the results come back in the order they were submitted, so the cell table
is the same wherever they ran. Why Dask's ``Client.submit`` inside the node rather than a Dask
runner for Kedro: the heavy work is *inside* one node (thousands of tiles of one slide), which
a runner that distributes whole nodes cannot split; and the same ``submit``/``result`` calls
serve a ``LocalCluster`` and a remote scheduler (``dask-jobqueue`` on SLURM, a compose file).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from histocluster.segmentation.settings import ParallelSettings

logger = logging.getLogger(__name__)


def available_cores() -> int:
    """The cores this process may use (the CPU affinity mask: containers, ``taskset``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Done:
    """A finished result that looks like a future."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


class InlineExecutor:
    """Runs each task when it is submitted, in this process."""

    workers = 1

    def submit(self, fn: Callable, *args: Any, **kwargs: Any) -> _Done:
        return _Done(fn(*args, **kwargs))


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Dask's own INFO lines (scheduler and worker start-up) stay out of the run's log."""
    dask_logger = logging.getLogger(name)
    level = dask_logger.level
    dask_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dask_logger.setLevel(level)


def worker_count(settings: ParallelSettings, tasks: int) -> int:
    """Worker processes for ``tasks`` tasks on this machine (never more than tasks)."""
    wanted = settings.n_workers if settings.n_workers is not None else available_cores()
    return max(1, min(wanted, tasks))


@contextlib.contextmanager
def compute_pool(settings: ParallelSettings, tasks: int) -> Iterator[Any]:
    """An executor with ``submit(fn, *args)`` → future with ``result()``: a Dask client of
    ``settings.scheduler``, else of a ``LocalCluster`` with :func:`worker_count` worker
    processes (one thread each), else (one worker or one task) :class:`InlineExecutor`."""
    if settings.scheduler:
        from distributed import Client

        with Client(settings.scheduler) as client:
            client.workers = len(client.scheduler_info().get("workers", {}))  # type: ignore[attr-defined]
            logger.info("Segmentation: %d tasks on the Dask cluster at %s", tasks, settings.scheduler)
            yield client
        return
    workers = worker_count(settings, tasks)
    if workers == 1:
        yield InlineExecutor()
        return
    import dask
    from distributed import Client, LocalCluster

    logger.info("Segmentation: %d tasks on %d worker processes (Dask LocalCluster)", tasks, workers)
    with (
        dask.config.set({"logging.distributed": "warning"}),  # passed on to the worker processes
        _quiet("distributed"),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.workers = workers  # type: ignore[attr-defined]
        yield client
