"""Independent check of a run's segmentation: dark blobs that no outline covers.

A simple detector that shares nothing with the segmenter (haematoxylin density smoothed at
nucleus scale, local maxima above Otsu; ``histocluster.segmentation.seed_check``) is run
on every kept tile of a slide; each seed is outlined or not. Prints the seeds, the share
without an outline (all, and the darkest third — the dark nuclei the segmenter misses),
and draws the tile with most unoutlined seeds: green outlines, red circles for seeds
without one.

``--calibrate <crc bench>`` first scores the detector itself against the CRC nucleus
points (recall within 4 µm; CRC marks a subset of nuclei, so precision is a lower bound).

Usage (after ``make run``, from the project root):
    python bench/bench_missed_nuclei.py [--slide cmu-1-small-region]
        [--figure docs/figures/missed_nuclei.png] [--tile TILE_ID] [--calibrate ../shared/data/bench/crc]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw


def calibrate(bench: Path, images: int = 40) -> None:
    """Recall of the seeds against CRC's nucleus points, within 4 µm."""
    from scipy.spatial import cKDTree

    from histocluster.segmentation.seed_check import nucleus_seeds

    mpp = json.loads((bench / "info.json").read_text())["mpp"]
    points = pd.read_csv(bench / "cells.csv")
    found = total = seeds = 0
    for path in sorted((bench / "images").iterdir())[:images]:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        seed = nucleus_seeds(rgb, mpp)[["row", "col"]].to_numpy(float)
        truth = points.loc[points["image_id"] == path.stem, ["y", "x"]].to_numpy(float)
        seeds, total = seeds + len(seed), total + len(truth)
        if len(seed) and len(truth):
            distance, _ = cKDTree(seed).query(truth, distance_upper_bound=4 / mpp)
            found += int(np.isfinite(distance).sum())
    print(
        f"Detector on {bench.name} ({images} images, {total} points): recall within 4 µm "
        f"{found / total:.3f}; {seeds} seeds ({seeds / total:.2f} per marked nucleus)"
    )


def load_run(root: Path) -> dict[str, pd.DataFrame]:
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root) as session:
        logging.getLogger("kedro").setLevel(logging.WARNING)
        catalog = session.load_context().catalog
        return {name: catalog.load(name) for name in ("slides", "tiles", "tile_quality", "cells")}


def check_slide(
    run: dict[str, pd.DataFrame], slide_id: str, figure: Path | None, tile_id: str | None = None
) -> None:
    from histocluster.reporting.drawing import cells_touching, segmentation_check
    from histocluster.segmentation.seed_check import nucleus_seeds, outlined
    from histocluster.wsi.slides import open_slide
    from histocluster.wsi.tile_grid import read_tile

    slide = run["slides"].set_index("slide_id").loc[slide_id]
    kept = set(run["tile_quality"].loc[run["tile_quality"]["keep"].astype(bool), "tile_id"])
    tiles = run["tiles"][(run["tiles"]["slide_id"] == slide_id) & run["tiles"]["tile_id"].isin(kept)]
    cells = run["cells"][run["cells"]["slide_id"] == slide_id]
    rows, worst = [], None
    with open_slide(slide["path"]) as reader:
        for tile in tiles.to_dict("records"):
            rgb = read_tile(reader, tile)
            seeds = nucleus_seeds(rgb, float(tile["out_mpp_x"]))
            sx, sy = tile["w"] / tile["out_w"], tile["h"] / tile["out_h"]
            x, y = tile["x"] + (seeds["col"] + 0.5) * sx, tile["y"] + (seeds["row"] + 0.5) * sy
            core = (
                (x >= tile["core_x0"])
                & (x < tile["core_x1"])
                & (y >= tile["core_y0"])
                & (y < tile["core_y1"])
            )
            seeds, x, y = seeds[core], x[core], y[core]  # each seed counted once, by the tile owning it
            near = cells_touching(cells, tile)
            covered = outlined(x.to_numpy(), y.to_numpy(), near["polygon"].to_numpy(), tolerance=1.0 / sx)
            rows.append(seeds.assign(tile_id=tile["tile_id"], outlined=covered))
            missed = int((~covered).sum())
            if tile_id is not None:
                if tile["tile_id"] == tile_id:
                    worst = (missed, tile, rgb, near, seeds[~covered])
            elif worst is None or missed > worst[0]:
                worst = (missed, tile, rgb, near, seeds[~covered])
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["haematoxylin", "outlined"])
    dark = table["haematoxylin"] >= table["haematoxylin"].quantile(2 / 3) if len(table) else table["outlined"]
    print(f"Slide {slide_id}: {len(tiles)} kept tiles, {len(cells)} cells")
    print(
        f"  seeds {len(table)}, without an outline {int((~table['outlined']).sum())} "
        f"({(~table['outlined']).mean():.1%}); darkest third {int(dark.sum())}, without an outline "
        f"{int((~table.loc[dark, 'outlined']).sum())} ({(~table.loc[dark, 'outlined']).mean():.1%})"
    )
    if figure is not None and worst is not None:
        missed, tile, rgb, near, lost = worst
        zoom = 2
        sheet = segmentation_check(
            rgb,
            tile,
            near,
            f"{tile['tile_id']}: green = outline, red = dark blob without one ({missed})",
            zoom,
        )
        draw = ImageDraw.Draw(sheet)
        offset_x, offset_y, r = rgb.shape[1] * zoom + 8, 22, 5 * zoom
        for row, col in zip(lost["row"], lost["col"], strict=True):
            cx, cy = offset_x + (col + 0.5) * zoom, offset_y + (row + 0.5) * zoom
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(230, 0, 0), width=2)
        figure.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(figure)
        why = tile_id or "the tile with most seeds without an outline"
        print(f"  picture: {figure} ({why})")
    elif figure is not None and tile_id is not None:
        raise SystemExit(f"{tile_id}: not a kept tile of {slide_id}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", type=Path, default=Path.cwd())
    parser.add_argument("--slide", default="cmu-1-small-region")
    parser.add_argument("--figure", type=Path, default=Path("data/08_reporting/missed_nuclei.png"))
    parser.add_argument(
        "--tile", default=None, help="draw this tile (default: the one with most missed seeds)"
    )
    parser.add_argument(
        "--calibrate", type=Path, help="a points-only bench set (crc) to score the detector on"
    )
    args = parser.parse_args()
    if args.calibrate:
        calibrate(args.calibrate)
    check_slide(load_run(args.project.resolve()), args.slide, args.figure, args.tile)


if __name__ == "__main__":
    main()
