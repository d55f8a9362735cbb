"""Wall-clock speed-up of the segmentation pass from 1 to N worker processes.

Runs the tiling nodes once on a slide, then the segmentation node (``segment_tiles``: tile
reads, quality, segmentation, measurements, pixel features) with
``segmentation.parallel.n_workers`` = each of ``--workers`` (nothing stored, so every run
segments every tile), and prints wall seconds, cells per wall-second and the speed-up over
one worker. The worker processes' start-up (Dask LocalCluster, importing torch, loading the
network) is included: it is what a run pays. Memory, sampled every 0.1 s (psutil): the peak
resident set of this process, of the largest worker process, and of all worker processes
together.

Usage:
    python bench/make_big_slide.py --out /tmp/big8k.tif --size 8192
    python bench/bench_parallel.py /tmp/big8k.tif [--workers 1 2] [--max-tiles 64]
    python bench/bench_parallel.py /tmp/big8k.tif --params cell_features.deep=typenet   # segmentation keys
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the workers are the parallelism
os.environ.setdefault("OPENCV_FOR_THREADS_NUM", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from kedro.framework.cli.utils import _split_params  # noqa: E402  (as bench_stages: kedro's --params)

from histocluster.pipelines.segmentation.nodes import segment_tiles  # noqa: E402
from histocluster.pipelines.tiling.nodes import describe_slides, detect_tissue_masks, plan_tiles  # noqa: E402
from histocluster.segmentation.settings import SegmentationParams  # noqa: E402
from histocluster.wsi.settings import FilteringParams, TilingParams  # noqa: E402
from histocluster.wsi.slides import SlideSource, slugify  # noqa: E402


class PeakMemory:
    """Peak resident memory (MiB) of this process, of its largest child process and of all
    its children together (NaN while none was seen: the run stayed in-process), sampled
    every ``every`` seconds while in a ``with`` block."""

    def __init__(self, every: float = 0.1) -> None:
        self.every, self.main, self.worker, self.workers = every, 0.0, float("nan"), float("nan")
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                self.main = max(self.main, me.memory_info().rss / 2**20)
                sizes = []
                for child in me.children(recursive=True):
                    try:
                        sizes.append(child.memory_info().rss / 2**20)
                    except psutil.Error:  # gone between listing and reading
                        pass
                if sizes:  # fmax: a NaN (nothing seen yet) gives way to the first figure
                    self.worker = float(np.fmax(self.worker, max(sizes)))
                    self.workers = float(np.fmax(self.workers, sum(sizes)))
            except psutil.Error:
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("slide", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-tiles", type=int, default=None, help="tiles segmented (default: all)")
    parser.add_argument("--tiles-per-task", type=int, default=None, help="default: the parameter's")
    parser.add_argument(
        "--params",
        default="",
        help="segmentation parameters, as kedro run --params: cell_features.deep=typenet",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)

    tiling = TilingParams(max_tiles=args.max_tiles)
    filtering = FilteringParams()
    sources = [SlideSource(slugify(args.slide.stem), str(args.slide))]
    slides, thumbnails, regions = describe_slides(sources, tiling)
    masks = detect_tissue_masks(slides, thumbnails, tiling)
    tiles = plan_tiles(slides, masks, regions, tiling)
    print(f"{args.slide.name}: {len(tiles)} tiles at {tiling.target_mpp} µm/px")
    rows = []
    for workers in args.workers:
        settings = [f"slide_store=null,parallel.n_workers={workers}", args.params]
        if args.tiles_per_task:
            settings.append(f"parallel.tiles_per_task={args.tiles_per_task}")
        params = SegmentationParams.model_validate(
            _split_params(None, None, ",".join(filter(None, settings)))
        )
        with PeakMemory() as memory:
            start = time.perf_counter()
            _, cells, *_ = segment_tiles(slides, tiles, tiling, filtering, params)
            wall = time.perf_counter() - start
        rows.append(
            {
                "workers": workers,
                "wall_s": wall,
                "cells": len(cells),
                "cells_per_s": len(cells) / wall,
                "peak_MiB_here": memory.main,
                "peak_MiB_largest_worker": memory.worker,
                "peak_MiB_workers": memory.workers,
            }
        )
    table = pd.DataFrame(rows)
    table["speed_up"] = table["wall_s"].iloc[0] / table["wall_s"]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
