"""Segmentation throughput on one slide: cells/s, tiles/s, Mpx/s and peak memory.

Tiles the slide and filters tiles with the pipelines' own nodes (not timed), then times
the segmentation node on every kept tile, and separately its two parts on the same
tiles: the watershed segmenter alone and the cell measurements (polygons, shape and
stain statistics). One process; ``--threads 1`` pins BLAS, OpenMP, torch and OpenCV to one thread for a per-core figure.

With the ``network`` foreground (the default) the network is loaded before the timing
starts and its start-up (torch import, weights) is printed on its own line: it is paid
once per run, not per tile.

Usage:
    python bench/bench_segmentation.py data/01_raw/slides/CMU-1-Small-Region.svs [--threads 1]
        [--settings '{"foreground": "threshold"}']
"""

from __future__ import annotations

import os
import sys

if "--threads" in sys.argv:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        os.environ[_var] = _n
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from histocluster.pipelines.segmentation.nodes import segment_tiles  # noqa: E402
from histocluster.pipelines.tiling.nodes import describe_slides, detect_tissue_masks, plan_tiles  # noqa: E402
from histocluster.segmentation.measurements import measure_cells  # noqa: E402
from histocluster.segmentation.settings import (
    SegmentationParams,
    WatershedSettings,  # noqa: E402
)
from histocluster.segmentation.stitching import stitch  # noqa: E402
from histocluster.segmentation.watershed import cached_network, segment_nuclei  # noqa: E402
from histocluster.wsi.settings import FilteringParams, TilingParams  # noqa: E402
from histocluster.wsi.slides import SlideSource, open_slide, slugify  # noqa: E402
from histocluster.wsi.tile_grid import read_tile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("slide", type=Path)
    parser.add_argument("--threads", default=None, help="pin BLAS/OpenMP threads (set before imports)")
    parser.add_argument("--settings", default="{}", help="watershed settings as JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    tiling, filtering = TilingParams(), FilteringParams()
    # No slide store: every tile is computed (a stored slide would be reused, not timed).
    segmentation = SegmentationParams(
        watershed=WatershedSettings(**json.loads(args.settings)), slide_store=None
    )
    startup = 0.0
    if segmentation.watershed.foreground == "network":
        start = time.perf_counter()
        w = segmentation.watershed
        cached_network(w.weights_path, w.runtime, w.precision)
        startup = time.perf_counter() - start
    slides, thumbnails, regions = describe_slides(
        [SlideSource(slugify(args.slide.stem), str(args.slide))], tiling
    )
    tiles = plan_tiles(slides, detect_tissue_masks(slides, thumbnails, tiling), regions, tiling)
    slide = slides.iloc[0]

    start = time.perf_counter()
    quality, cells, _, _, _ = segment_tiles(slides, tiles, tiling, filtering, segmentation)
    node_seconds = time.perf_counter() - start
    kept = tiles[tiles["tile_id"].isin(quality.loc[quality["keep"], "tile_id"])]

    read = seg = meas = 0.0
    with open_slide(slide["path"]) as reader:
        for tile in kept.to_dict("records"):
            t0 = time.perf_counter()
            rgb = read_tile(reader, tile)
            t1 = time.perf_counter()
            labels = stitch(
                segment_nuclei(rgb, tile["out_mpp_x"], segmentation.watershed),
                tile,
                slide["width"],
                slide["height"],
            )
            t2 = time.perf_counter()
            measure_cells(labels, rgb, tile, "watershed")
            t3 = time.perf_counter()
            read, seg, meas = read + t1 - t0, seg + t2 - t1, meas + t3 - t2

    mpx = len(kept) * tiling.tile_size**2 / 1e6
    print(
        f"slide           {args.slide.name}: {len(kept)} kept tiles of {tiling.tile_size}² px at {tiling.target_mpp[0]} µm/px ({mpx:.1f} Mpx)"
    )
    print(f"threads         {args.threads or 'default'} (BLAS/OpenMP), {os.cpu_count()} CPU(s) visible")
    print(
        f"foreground      {segmentation.watershed.foreground}"
        + (f" (start-up {startup:.2f} s, once per run)" if startup else "")
    )
    print(
        f"segmentation    {len(cells)} cells in {node_seconds:.2f} s -> {len(cells) / node_seconds:.0f} cells/s, "
        f"{len(kept) / node_seconds:.2f} tiles/s, {mpx / node_seconds:.2f} Mpx/s "
        "(node, end to end: reading, tile quality, segmentation, measurements, texture features)"
    )
    print(f"  read tiles    {read:.2f} s")
    print(f"  watershed     {seg:.2f} s -> {mpx / seg:.2f} Mpx/s")
    print(f"  measurements  {meas:.2f} s -> {len(cells) / meas:.0f} cells/s")
    print(
        f"peak memory     {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS (process)"
    )


if __name__ == "__main__":
    main()
