"""The segmentation pass over worker processes: a pool of 2 worker processes, and a real
Dask LocalCluster (2 workers) reached by its address, give the same cells, tile quality
and clusters as the run's own process."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from histocluster.segmentation.compute_pool import available_cores, worker_count
from histocluster.segmentation.settings import ParallelSettings
from histocluster.segmentation.tile_pass import _batches, slide_chunks

from .conftest import kedro_run, load, messages


def _tiles(sizes: list[tuple[float, int]]) -> pd.DataFrame:
    rows = []
    for mpp, count in sizes:
        rows += [{"tile_id": f"{mpp}_{k}", "target_mpp": mpp} for k in range(count)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("per_task", [1, 5, 8, 9, 100])
def test_chunks_are_whole_batches_in_order(per_task):
    tiles = _tiles([(0.5, 13), (1.0, 6)])
    chunks = slide_chunks(tiles, tiles_per_batch=4, tiles_per_task=per_task)
    pd.testing.assert_frame_equal(pd.concat(chunks), tiles)
    whole = [[t["tile_id"] for t in b] for b in _batches(tiles.to_dict("records"), 4)]
    cut = [[t["tile_id"] for t in b] for chunk in chunks for b in _batches(chunk.to_dict("records"), 4)]
    assert cut == whole  # every tile batched with the same neighbours as in one piece
    for chunk in chunks[:-1]:  # each closes at the first batch end past the size asked
        assert per_task <= len(chunk) <= per_task + 4 - 1
    assert (len(chunks) == 1) == (per_task >= len(tiles))


def test_worker_count_follows_the_cores_and_the_tasks():
    assert worker_count(ParallelSettings(n_workers=4), tasks=8) == 4
    assert worker_count(ParallelSettings(n_workers=4), tasks=5) == 2  # two tasks per worker at least
    assert worker_count(ParallelSettings(n_workers=4), tasks=3) == 1  # in-process
    assert worker_count(ParallelSettings(n_workers=1), tasks=10) == 1
    assert worker_count(ParallelSettings(), tasks=1000) == available_cores()


@pytest.mark.slow
def test_worker_processes_and_a_dask_cluster_give_the_same_cells_and_clusters(project, cmu_slide):
    root = project([cmu_slide])
    common = {
        "tiling.max_tiles": 8,
        "segmentation.slide_store": None,
        "segmentation.tiles_per_batch": 2,
        "segmentation.parallel.tiles_per_task": 2,
    }
    kedro_run(root, "tiling", **common)

    def run(workers: int, log: list) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        for pipeline in ("segmentation", "clustering"):
            kedro_run(root, pipeline, log=log, **common, **{"segmentation.parallel.n_workers": workers})
        return tuple(load(root, "cells", "tile_quality", "clusters"))

    here: list[logging.LogRecord] = []
    cells, quality, clusters = run(1, here)
    assert "worker processes" not in messages(here)
    spread: list[logging.LogRecord] = []
    cells2, quality2, clusters2 = run(2, spread)
    assert "Segmentation: 4 tasks on 2 worker processes" in messages(spread)
    assert len(cells) > 100
    pd.testing.assert_frame_equal(cells, cells2)
    pd.testing.assert_frame_equal(quality, quality2)
    pd.testing.assert_frame_equal(clusters, clusters2)

    # A cluster started elsewhere, reached by its scheduler's address.
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        remote: list[logging.LogRecord] = []
        kedro_run(
            root,
            "segmentation",
            log=remote,
            **common,
            **{"segmentation.parallel.scheduler": cluster.scheduler_address},
        )
        assert f"4 tasks on the Dask cluster at {cluster.scheduler_address}" in messages(remote)
        (cells3,) = load(root, "cells")
    pd.testing.assert_frame_equal(cells, cells3)


@pytest.mark.slow
def test_network_features_computed_in_worker_processes_equal_those_computed_here(project, cmu_slide):
    """``segmentation.cell_features.deep: typenet``: the network loads in each worker (not
    in the run's own process) and gives every cell the features it gets in-process."""
    root = project([cmu_slide])
    common = {
        "tiling.max_tiles": 4,
        "segmentation.slide_store": None,
        "segmentation.tiles_per_batch": 1,
        "segmentation.parallel.tiles_per_task": 1,
        "segmentation.cell_features.deep": "typenet",
    }
    kedro_run(root, "tiling", **common)
    results = []
    for workers in (1, 2):
        log: list[logging.LogRecord] = []
        kedro_run(root, "segmentation", log=log, **common, **{"segmentation.parallel.n_workers": workers})
        assert ("worker processes" in messages(log)) == (workers == 2)
        results.append(load(root, "cells", "cell_deep_features"))
    (cells, here), (cells2, spread) = results
    pd.testing.assert_frame_equal(cells, cells2)
    assert len(here) == len(cells) > 50 and here.dim == 132
    order = pd.Series(range(len(spread)), index=spread.cell_ids).loc[here.cell_ids].to_numpy()
    assert np.allclose(np.asarray(here.matrix), np.asarray(spread.matrix)[order], atol=1e-4)
    # The network's names for its columns come back from the workers too (the types it gives).
    assert spread.columns == here.columns and here.columns[-1] == "typenet:logp_others"
