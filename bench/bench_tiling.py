"""Throughput of tiling + filtering on one slide: tiles/s, Mpx/s, peak memory.

Runs the pipelines' own node functions (without Kedro's dataset I/O) on a slide,
``--repeat`` times, and prints the median time per stage and the figures derived from
it. Peak memory is the process's maximum resident set size (ru_maxrss) and the peak of
Python-level allocations (tracemalloc) during one full pass.

Usage:
    python bench/bench_tiling.py data/01_raw/slides/CMU-1-Small-Region.svs [--repeat 5]
        [--target-mpp 0.5] [--tile-size 512]
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import pandas as pd  # noqa: E402

from histocluster.pipelines.tiling.nodes import describe_slides, detect_tissue_masks, plan_tiles  # noqa: E402
from histocluster.wsi.settings import FilteringParams, TilingParams  # noqa: E402
from histocluster.wsi.slides import SlideSource, open_slide, slugify  # noqa: E402
from histocluster.wsi.tile_grid import read_tile  # noqa: E402
from histocluster.wsi.tile_quality import judge, tile_metrics  # noqa: E402


def measure_tile_quality(slides, tiles, filtering: FilteringParams, tiling: TilingParams) -> pd.DataFrame:
    """Read every tile and judge it, as the segmentation pass does before segmenting."""
    rows = []
    with open_slide(slides.iloc[0]["path"]) as reader:
        for tile in tiles.to_dict("records"):
            metrics = tile_metrics(read_tile(reader, tile), filtering.thresholds, tiling.tissue)
            rows.append({"tile_id": tile["tile_id"], "keep": judge(metrics, filtering.thresholds)[0]})
    return pd.DataFrame(rows, columns=["tile_id", "keep"])


def one_pass(source: SlideSource, tiling: TilingParams, filtering: FilteringParams) -> dict:
    times = {}
    start = time.perf_counter()
    slides, thumbnails, regions = describe_slides([source], tiling)
    times["read slide + thumbnail"] = time.perf_counter() - start
    start = time.perf_counter()
    masks = detect_tissue_masks(slides, thumbnails, tiling)
    times["tissue detection"] = time.perf_counter() - start
    start = time.perf_counter()
    tiles = plan_tiles(slides, masks, regions, tiling)
    times["tile grid"] = time.perf_counter() - start
    start = time.perf_counter()
    quality = measure_tile_quality(slides, tiles, filtering, tiling)
    times["filtering (read + metrics)"] = time.perf_counter() - start
    return {"times": times, "slides": slides, "tiles": tiles, "quality": quality}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("slide", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--target-mpp", type=float, default=0.5)
    parser.add_argument("--tile-size", type=int, default=512)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    source = SlideSource(slugify(args.slide.stem), str(args.slide))
    tiling = TilingParams(target_mpp=[args.target_mpp], tile_size=args.tile_size)
    filtering = FilteringParams()

    one_pass(source, tiling, filtering)  # warm-up: file cache, imports, JIT-free paths
    tracemalloc.start()
    result = one_pass(source, tiling, filtering)
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    runs = [result["times"]] + [one_pass(source, tiling, filtering)["times"] for _ in range(args.repeat - 1)]
    median = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}

    slide = result["slides"].iloc[0]
    tiles = result["tiles"]
    n_tiles = len(tiles)
    kept = int(result["quality"]["keep"].sum())
    tile_mpx = n_tiles * args.tile_size**2 / 1e6
    slide_mpx = slide["width"] * slide["height"] / 1e6
    tiling_time = median["read slide + thumbnail"] + median["tissue detection"] + median["tile grid"]
    filtering_time = median["filtering (read + metrics)"]
    total = tiling_time + filtering_time

    print(
        f"slide           {args.slide.name}: {slide['width']}×{slide['height']} px, {slide['mpp_x']:.3f} µm/px"
    )
    print(
        f"tiles           {n_tiles} at {args.target_mpp} µm/px, {args.tile_size} px ({tile_mpx:.1f} Mpx), {kept} kept"
    )
    print(f"runs            {args.repeat} (median shown), {os.cpu_count()} CPU(s) visible, one process")
    for stage, seconds in median.items():
        print(f"  {stage:<28} {seconds * 1000:8.1f} ms")
    print(f"tiling          {tiling_time:.3f} s  -> {slide_mpx / tiling_time:.1f} slide Mpx/s (level 0)")
    print(
        f"filtering       {filtering_time:.3f} s  -> {n_tiles / filtering_time:.1f} tiles/s, {tile_mpx / filtering_time:.1f} tile Mpx/s"
    )
    print(
        f"end to end      {total:.3f} s  -> {n_tiles / total:.1f} tiles/s, {slide_mpx / total:.1f} slide Mpx/s"
    )
    print(
        f"peak memory     {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS (process), {python_peak / 2**20:.1f} MiB Python allocations (one pass)"
    )


if __name__ == "__main__":
    main()
