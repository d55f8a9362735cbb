"""Tile grids: physical scale, coverage, core boxes, tissue fraction, sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_grid import GridSpec, mask_fraction, plan_grid, read_tile, sample_uniform, tile_id


def test_footprint_follows_physical_scale():
    """512 px at 0.5 µm/px is 256 µm: 1024 level-0 px on a 0.25 µm/px (40×) slide and
    512 on a 0.5 µm/px (20×) one."""
    spec = GridSpec(target_mpp=0.5, tile_size=512, overlap=64)
    at40 = plan_grid("s", 5000, 3000, (0.25, 0.25), spec)
    at20 = plan_grid("s", 2500, 1500, (0.5, 0.5), spec)
    assert set(at40["w"]) == {1024} and set(at20["w"]) == {512}
    assert np.diff(sorted(set(at40["x"])))[0] == 896  # (512 - 64) * 2
    assert len(at40) == len(at20)
    assert at40["out_mpp_x"].iloc[0] == pytest.approx(0.5)


def test_grid_covers_the_whole_slide():
    grid = plan_grid("s", 2220, 2967, (0.499, 0.499), GridSpec(0.5, 512, 64))
    assert grid["x"].min() == 0 and grid["y"].min() == 0
    assert (grid["x"] + grid["w"]).max() >= 2220
    assert (grid["y"] + grid["h"]).max() >= 2967
    assert grid["tile_id"].is_unique


def test_core_boxes_partition_the_slide():
    """Every point of the slide lies in exactly one tile's core box, and that tile's
    footprint holds it with at least ~half the overlap to spare on inner sides."""
    width, height = 3001, 2003
    grid = plan_grid("s", width, height, (0.5, 0.5), GridSpec(0.5, 256, 40))
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [width, height], size=(5000, 2))
    # Also the exact seams between cores.
    seams = np.array([[x, 10.0] for x in grid["core_x1"].unique()[:-1]])
    points = np.vstack([points, seams])
    inside = (
        (points[:, None, 0] >= grid["core_x0"].to_numpy())
        & (points[:, None, 0] < grid["core_x1"].to_numpy())
        & (points[:, None, 1] >= grid["core_y0"].to_numpy())
        & (points[:, None, 1] < grid["core_y1"].to_numpy())
    )
    assert (inside.sum(axis=1) == 1).all()
    owner = grid.iloc[inside.argmax(axis=1)]
    assert (points[:, 0] >= owner["x"].to_numpy()).all()
    assert (points[:, 0] < (owner["x"] + owner["w"]).to_numpy()).all()


def test_inner_core_is_tile_minus_half_overlap():
    grid = plan_grid("s", 2000, 2000, (0.5, 0.5), GridSpec(0.5, 512, 64))
    inner = grid[(grid["row"] == 1) & (grid["col"] == 1)].iloc[0]
    assert (inner.core_x0, inner.core_x1) == (inner.x + 32, inner.x + 512 - 32)
    first = grid[(grid["row"] == 0) & (grid["col"] == 0)].iloc[0]
    assert (first.core_x0, first.core_y0) == (0, 0)  # the slide edge is not an inner side


def test_overlap_must_be_below_tile_size():
    with pytest.raises(ValueError, match="overlap"):
        GridSpec(0.5, 256, 256)


def test_mask_fraction_matches_counting():
    rng = np.random.default_rng(3)
    mask = rng.random((50, 80)) > 0.6
    boxes = np.array([[0, 0, 40, 40], [100, 60, 40, 40], [300, 180, 40, 40], [0, 0, 400, 250]])
    got = mask_fraction(mask, (5.0, 5.0), boxes)
    expected = [
        mask[0:8, 0:8].mean(),
        mask[12:20, 20:28].mean(),
        mask[36:44, 60:68].sum() / 64,  # rows 50+ lie outside the mask: background
        mask.mean(),
    ]
    assert got == pytest.approx(expected)


def test_sample_uniform_spreads_over_space():
    grid = np.array([(x, y) for x in range(30) for y in range(30)], dtype=float)
    chosen = sample_uniform(grid, 9)
    assert len(set(chosen)) == 9
    picked = grid[chosen]
    pairwise = np.sqrt(((picked[:, None] - picked[None]) ** 2).sum(-1))
    assert pairwise[np.triu_indices(9, 1)].min() >= 9  # a 3×3 lattice has spacing ~10-14
    assert np.array_equal(chosen, sample_uniform(grid, 9))  # deterministic
    assert len(sample_uniform(grid, 5000)) == 900


def test_tile_ids_are_readable_and_stable():
    assert tile_id("cmu-1", 0.5, 2, 13) == "cmu-1_0.5mpp_r002_c013"


def test_read_tile_at_target_resolution(cmu_slide):
    """A 0.25 µm/px tile from a 0.499 µm/px slide has the output size and shows the
    level-0 region it claims to (compared with that region resized independently)."""
    with open_slide(cmu_slide) as reader:
        grid = plan_grid("cmu", *reader.dimensions, reader.mpp, GridSpec(0.25, 256, 32))
        tile = grid.iloc[len(grid) // 2]
        pixels = read_tile(reader, tile)
        region = reader.read_region((int(tile.x), int(tile.y)), 0, (int(tile.w), int(tile.h)))
    assert pixels.shape == (256, 256, 3)
    assert tile.w == 128  # 256 px × 0.25 / 0.499
    expected = np.asarray(Image.fromarray(region).resize((256, 256), Image.Resampling.BILINEAR))
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 6
    shifted = np.roll(expected, 40, axis=1)
    assert np.abs(pixels.astype(int) - shifted.astype(int)).mean() > 10  # the check can fail


def test_pictures_of_a_small_slide_are_read_finer_than_its_tissue_thumbnail(tmp_path):
    """A 1200 × 300 image has a 4 µm/px thumbnail of 150 × 38 px at 0.5 µm/px: its pictures
    read it again at 800 px across (1.5 level-0 px a pixel), not the thumbnail enlarged."""
    from histocluster.wsi.pictures import tiling_overview
    from histocluster.wsi.slides import picture_thumbnail

    yy, xx = np.mgrid[0:300, 0:1200]
    rgb = np.stack([xx % 256, yy % 256, (xx // 7) % 256], axis=-1).astype(np.uint8)  # detail at every pixel
    path = tmp_path / "region.png"
    Image.fromarray(rgb).save(path)
    coarse = np.asarray(Image.fromarray(rgb).resize((150, 38), Image.Resampling.BOX))
    fine = picture_thumbnail(path, coarse)
    assert fine.shape == (200, 800, 3)
    expected = np.asarray(Image.fromarray(rgb).resize((800, 200), Image.Resampling.LANCZOS)).astype(int)
    assert np.abs(fine.astype(int) - expected).mean() < 2  # the slide's own pixels, read at 800 px
    assert picture_thumbnail(path, np.zeros((900, 10, 3), np.uint8)).shape == (900, 10, 3)  # large enough
    assert picture_thumbnail(path, rgb).shape == rgb.shape  # nothing finer to read
    mask = np.ones((38, 150), bool)
    tiles = pd.DataFrame({"x": [0], "y": [0], "w": [512], "h": [300]})
    picture = tiling_overview(fine, mask, tiles, (1200 / 800, 300 / 200), "region")
    assert picture.width >= 800  # drawn at the finer picture's size (the mask follows it)
