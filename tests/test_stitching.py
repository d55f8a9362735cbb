"""Stitching: nuclei straddling tile borders and corners appear exactly once, whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from histocluster.segmentation.measurements import CELL_COLUMNS, measure_cells, measure_objects
from histocluster.segmentation.stitching import stitch
from histocluster.segmentation.watershed import segment_nuclei
from histocluster.wsi.tile_grid import GridSpec, plan_grid

from .conftest import tile_record
from .test_watershed import synthetic_he

MPP = 0.5


def segment_by_tiles(rgb: np.ndarray, grid: pd.DataFrame) -> pd.DataFrame:
    """What the segmentation pipeline does, on an in-memory 'slide' at 1:1 scale."""
    height, width = rgb.shape[:2]
    frames = []
    for tile in grid.to_dict("records"):
        window = np.full((tile["h"], tile["w"], 3), 255, np.uint8)
        part = rgb[tile["y"] : tile["y"] + tile["h"], tile["x"] : tile["x"] + tile["w"]]
        window[: part.shape[0], : part.shape[1]] = part
        labels = stitch(segment_nuclei(window, MPP), tile, width, height)
        frames.append(measure_cells(labels, window, tile, "watershed"))
    return pd.concat(frames, ignore_index=True)


def test_every_nucleus_once_with_its_full_area():
    """Tiles of 64 px (32 µm) overlapping by 24 px (12 µm); nuclei of radius 3.5 µm put
    on vertical and horizontal tile borders, on a corner and inside a tile."""
    grid = plan_grid("s", 200, 200, (MPP, MPP), GridSpec(MPP, tile_size=64, overlap=24))
    stride_um = 40 * MPP
    centres = [
        (10.0, stride_um + 5.0),  # on the border between columns 0 and 1 (tile 0 ends at 32 µm)
        (stride_um + 5.0, 15.0),  # on a row border
        (32.0, 32.0),  # on a corner shared by four tiles
        (70.0, 70.0),  # inside
        (55.0, 84.0),
    ]
    rgb, truth = synthetic_he(MPP, centres, radius_um=3.5, size_um=100)
    whole_tile = tile_record(200, MPP, tile_id="whole")
    whole = measure_cells(segment_nuclei(rgb, MPP), rgb, whole_tile, "watershed")
    assert len(whole) == len(centres)
    cells = segment_by_tiles(rgb, grid)

    assert len(cells) == len(centres)
    assert cells["cell_id"].is_unique
    # Each true nucleus is found once, at its place, with the area the whole image gives.
    true_xy = np.array([(cx / MPP, cy / MPP) for cy, cx in centres])
    found = cells[["centroid_x", "centroid_y"]].to_numpy()
    distance = np.sqrt(((true_xy[:, None] - found[None]) ** 2).sum(-1))
    assert (distance.min(axis=1) < 1.5).all()
    # (Within 3 %: a 64 px tile gives the network less context near its edge than the whole
    # image, which moves an outline by a pixel or so; a cut nucleus would lose about half.)
    assert sorted(np.round(cells["area_um2"], 1)) == pytest.approx(
        sorted(np.round(whole["area_um2"], 1)), rel=0.03
    )
    # Not cut: a border-cut nucleus would keep about half its area. (The network's outlines sit
    # a little inside these flat synthetic discs: 82–93 % of the drawn area.)
    assert (cells["area_um2"] > 0.75 * np.pi * 3.5**2).all()


def test_a_cut_nucleus_is_dropped_by_the_tile_that_cuts_it():
    grid = plan_grid("s", 200, 200, (MPP, MPP), GridSpec(MPP, tile_size=64, overlap=24))
    first = grid.iloc[0].to_dict()  # covers x 0..64 px, core to x < 52 (inner right side)
    rgb, _ = synthetic_he(MPP, [(10.0, 31.0)], radius_um=3.5, size_um=32)  # cut at 32 µm = 64 px
    labels = segment_nuclei(rgb, MPP)
    assert labels.max() >= 1
    assert stitch(labels, first, 200, 200).max() == 0


def test_measurements_by_hand():
    """A 20×10 px rectangle at 0.5 µm/px in a tile at level-0 offset (1000, 2000) with
    2 level-0 px per tile px."""
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 10:30] = 1
    rgb = np.full((40, 40, 3), 200, np.uint8)
    tile = tile_record(40, 0.5, x=1000, y=2000, scale=2)
    (cell,) = measure_cells(labels, rgb, tile, "watershed").to_dict("records")
    assert list(measure_cells(labels, rgb, tile, "watershed").columns) == CELL_COLUMNS
    assert cell["area_um2"] == pytest.approx(200 * 0.25)
    assert (cell["centroid_x"], cell["centroid_y"]) == pytest.approx((1000 + 20 * 2, 2000 + 10 * 2))
    assert (cell["bbox_x0"], cell["bbox_y0"], cell["bbox_x1"], cell["bbox_y1"]) == (1020, 2010, 1060, 2030)
    polygon = shapely.from_wkb(cell["polygon"])
    assert polygon.is_valid
    assert polygon.bounds == pytest.approx((1020, 2010, 1060, 2030), abs=0.01)
    assert (polygon.centroid.x, polygon.centroid.y) == pytest.approx((cell["centroid_x"], cell["centroid_y"]))
    assert polygon.area == pytest.approx(40 * 20, rel=0.05)  # level-0 px²
    assert cell["major_axis_um"] > cell["minor_axis_um"]
    assert cell["cell_id"] == "t_n0000" and cell["segmenter"] == "watershed"
    # measure_objects: the same rows plus the object's label, to join ground truth.
    labels[25:35, 5:15] = 7
    objects = measure_objects(labels, rgb, tile, "watershed")
    assert objects["label"].tolist() == [1, 7]
    assert objects.drop(columns="label").equals(measure_cells(labels, rgb, tile, "watershed"))


def test_shape_measurements_agree_with_regionprops():
    """The vectorised moments against scikit-image's per-object regionprops (which has
    no 1/12 pixel-variance term, hence the small tolerance)."""
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(4)
    from scipy import ndimage as ndi

    blobs = ndi.gaussian_filter(rng.random((200, 200)), 4) > 0.52
    labels = label(blobs)
    rgb = np.full((200, 200, 3), 180, np.uint8)
    tile = tile_record(200, 1.0)
    cells = measure_cells(labels, rgb, tile, "watershed")
    props = {
        (round(p.centroid[1] + 0.5, 6), round(p.centroid[0] + 0.5, 6)): p
        for p in regionprops(labels)
        if p.area >= 30
    }
    assert len(props) >= 10
    checked = 0
    for cell in cells.to_dict("records"):
        p = props.get((round(cell["centroid_x"], 6), round(cell["centroid_y"], 6)))
        if p is None:
            continue
        checked += 1
        assert cell["area_um2"] == p.area
        assert cell["major_axis_um"] == pytest.approx(p.axis_major_length, rel=0.03)
        assert cell["minor_axis_um"] == pytest.approx(p.axis_minor_length, rel=0.05, abs=0.3)
        assert cell["eccentricity"] == pytest.approx(p.eccentricity, abs=0.03)
        assert cell["solidity"] == pytest.approx(p.solidity, abs=0.1)
    assert checked == len(props)
