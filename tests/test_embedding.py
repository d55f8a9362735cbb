"""Morphology embedding: pixel features, context, standardisation, combination, and
tiles read with a margin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histocluster.datasets import EmbeddingsDataset
from histocluster.features.cell_pixels import rasterise
from histocluster.features.embeddings import Embeddings
from histocluster.features.morphology import (
    MEASURED_COLUMNS,
    MissingTextureError,
    morphology_embedding,
    neighbourhood_context,
)
from histocluster.features.scaling import combine, keep_rows, standardise, standardise_within
from histocluster.features.settings import MorphologySettings
from histocluster.features.texture import LBP_BINS, PIXEL_COLUMNS, pixel_features, ring_labels
from histocluster.segmentation.measurements import measure_cells
from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_grid import read_tile, read_with_margin

from .conftest import disc, tile_record, two_cells


def test_pixel_features_see_the_cell_and_what_surrounds_it():
    labels, rgb = two_cells()
    f = pixel_features(labels, rgb, mpp=0.5, ring_um=2.0).set_index("label")
    assert list(f.columns) == PIXEL_COLUMNS and list(f.index) == [1, 2]
    assert f.loc[1, "grey_mean"] < f.loc[2, "grey_mean"]  # the dark nucleus is darker
    assert f.loc[1, "ring_eosin_mean"] > f.loc[2, "ring_eosin_mean"] + 0.1  # stroma vs glass
    assert f.loc[2, "ring_grey_mean"] == pytest.approx(1.0)  # white glass
    lbp = f[[f"lbp_{k}" for k in range(LBP_BINS)]].to_numpy()
    assert np.allclose(lbp.sum(axis=1), 1.0)  # a histogram per cell
    assert f.notna().all().all()


def test_ring_excludes_other_cells_and_has_the_asked_width():
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:20] = 1
    labels[10:20, 21:30] = 2  # one pixel of background between the cells
    ring = ring_labels(labels, 3)
    assert not ring[labels > 0].any()
    assert (ring[10:20, 7:10] == 1).all() and not ring[10:20, :7].any()  # 3 px wide
    assert ring[25, 15] == 0  # 5 px below cell 1: outside the ring
    empty = pixel_features(np.zeros((8, 8), np.int32), np.zeros((8, 8, 3), np.uint8), 0.5)
    assert empty.empty and list(empty.columns) == ["label", *PIXEL_COLUMNS]


def test_standardise_handles_constant_and_wild_columns():
    x = np.column_stack([np.arange(10.0), np.full(10, 7.0), [0] * 9 + [1e6]])
    z = standardise(x, clip=2.0)
    assert z.dtype == np.float32
    assert np.allclose(z[:, 0].mean(), 0, atol=1e-6) and np.allclose(z[:, 0].std(), 1, atol=1e-5)
    assert (z[:, 1] == 0).all()  # constant → 0, not NaN
    assert z[:, 2].max() == pytest.approx(2.0)  # clipped
    assert np.isfinite(standardise(np.array([[np.nan, 1.0], [2.0, np.inf]]))).all()


def test_context_is_the_mean_of_the_nearest_cells_of_the_same_slide():
    x = np.array([[1.0], [2.0], [10.0], [5.0]], np.float32)
    points = np.array([[0, 0], [1, 0], [5, 0], [0, 0]], np.float64)
    slides = np.array(["a", "a", "a", "b"])
    context = neighbourhood_context(x, points, slides, k=1)
    assert context[0, 0] == 2.0 and context[1, 0] == 1.0 and context[2, 0] == 2.0
    assert context[0, 1] == pytest.approx(np.log1p(1.0)) and context[2, 1] == pytest.approx(np.log1p(4.0))
    assert (context[3] == 0).all()  # alone on its slide


def test_morphology_embedding_columns_and_weights():
    rng = np.random.default_rng(0)
    n = 30
    cells = pd.DataFrame(rng.normal(size=(n, 11)), columns=MEASURED_COLUMNS)
    cells["centroid_x"], cells["centroid_y"], cells["slide_id"] = (
        rng.uniform(0, 500, n),
        rng.uniform(0, 500, n),
        "s",
    )
    pixels = pd.DataFrame(rng.normal(size=(n, len(PIXEL_COLUMNS))), columns=PIXEL_COLUMNS)
    with pytest.raises(MissingTextureError, match="segmentation.cell_features.texture"):
        morphology_embedding(cells, np.full(n, 0.5), MorphologySettings(context_neighbours=4))
    cells = pd.concat([cells, pixels], axis=1)
    x, columns = morphology_embedding(cells, np.full(n, 0.5), MorphologySettings(context_neighbours=4))
    assert x.shape == (n, 2 * (11 + len(PIXEL_COLUMNS)) + 1) == (n, len(columns))
    assert columns[-1] == "context_distance" and "context_lbp_3" in columns
    plain, plain_columns = morphology_embedding(
        cells, np.full(n, 0.5), MorphologySettings(texture=False, context_neighbours=0)
    )
    assert plain.shape == (n, 11) and plain_columns[0] == "area_um2"
    # combine: each block weighs its weight, whatever its width.
    wide, narrow = standardise(rng.normal(size=(n, 200))), standardise(rng.normal(size=(n, 5)))
    both = combine([(wide, 1.0), (narrow, 2.0)])
    assert both.shape == (n, 205)
    share = (both[:, :200] ** 2).sum() / (both[:, 200:] ** 2).sum()
    assert share == pytest.approx(1 / 4, rel=0.05)


def test_cell_polygons_are_drawn_back_where_they_were_found():
    """measure_cells' level-0 polygons, redrawn in the tile frame (tile at (1000, 2000),
    2 level-0 px per tile px), give back the segmented masks."""
    labels = np.zeros((64, 64), np.int32)
    labels[disc((64, 64), (20, 20), 9)] = 1
    labels[10:30, 40:52] = 2
    rgb = np.full((64, 64, 3), 200, np.uint8)
    tile = tile_record(64, 0.5, x=1000, y=2000, scale=2)
    cells = measure_cells(labels, rgb, tile, "watershed")
    import shapely

    redrawn = rasterise(shapely.from_wkb(cells["polygon"].to_numpy()), tile, labels.shape)
    for k, cell in enumerate(cells.itertuples()):
        original = labels == (1 if cell.area_um2 > 60 else 2)
        drawn = redrawn == k + 1
        iou = (original & drawn).sum() / (original | drawn).sum()
        assert iou > 0.95, (k, iou)


@pytest.fixture
def small_slide(tmp_path):
    labels, rgb = two_cells()
    path = tmp_path / "two.png"
    Image.fromarray(rgb).save(path)
    return path, labels, rgb


def _tables(path, labels, rgb):
    tile = tile_record(120, 0.5, x=0, y=0, scale=1)
    tile.update(out_h=60, h=60, slide_id="two")
    cells = measure_cells(labels, rgb, tile, "watershed")
    slides = pd.DataFrame({"slide_id": ["two"], "path": [str(path)], "mpp_x": [0.5], "mpp_y": [0.5]})
    tiles = pd.DataFrame([tile])
    return slides, tiles, cells


def test_read_with_margin_pads_beyond_the_slide_with_white(small_slide):
    path, labels, rgb = small_slide
    slides, tiles, _ = _tables(path, labels, rgb)
    with open_slide(path) as reader:
        padded = read_with_margin(reader, tiles.iloc[0].to_dict(), margin=5)
    assert padded.shape == (70, 130, 3)
    assert (padded[:5] == 255).all() and (padded[:, :5] == 255).all()
    assert np.array_equal(padded[5:-5, 5:-5], rgb)


def test_a_tile_read_with_a_margin_holds_the_very_pixels_of_the_tile_read_alone(small_slide):
    """Network features need a margin around each tile; asking for them must not change
    the pixels segmented and measured, also when the tile is resampled (here 0.99 ×)."""
    path, labels, rgb = small_slide
    tile = tile_record(100, 0.5, x=7, y=3, scale=1)
    tile.update(w=99, h=50, out_w=100, out_h=50, slide_id="two")
    with open_slide(path) as reader:
        alone = read_tile(reader, tile)
        padded = read_with_margin(reader, tile, margin=6)
    assert padded.shape == (62, 112, 3)
    assert np.array_equal(padded[6:-6, 6:-6], alone)


def test_embeddings_dataset_round_trip_is_memory_mapped(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    data = Embeddings(np.array(["a", "b", "c", "d"], dtype=object), matrix, ["x", "y", "z"])
    dataset = EmbeddingsDataset(filepath=str(tmp_path / "emb"))
    dataset.save(data)
    loaded = dataset.load()
    assert isinstance(loaded.matrix, np.memmap) and loaded.matrix.dtype == np.float32
    assert np.array_equal(loaded.matrix, matrix) and list(loaded.cell_ids) == ["a", "b", "c", "d"]
    assert loaded.columns == ["x", "y", "z"] and dataset.exists()
    assert not (tmp_path / "emb.partial").exists()
    with pytest.raises(ValueError, match="4 cell ids"):
        Embeddings(np.array(["a"] * 4, dtype=object), np.zeros((3, 2)))


def test_in_place_helpers_leave_no_second_copy():
    rng = np.random.default_rng(1)
    matrix = np.empty((50, 8), np.float32)
    matrix[:, :3] = rng.normal(5, 2, (50, 3))
    view = matrix[:, 3:]
    view[...] = rng.normal(-3, 10, (50, 5))
    expected = standardise(view.copy(), chunk=7)
    assert standardise(view, inplace=True, chunk=7) is view  # chunked, in place, same answer
    assert np.allclose(view, expected) and np.allclose(view.mean(axis=0), 0, atol=1e-5)
    left = standardise(matrix[:, :3].copy())
    combine([(left, 1.0), (view, 1.0)], out=matrix)
    assert np.allclose(matrix[:, 3:], expected / np.sqrt(5), atol=1e-6)
    assert np.allclose(matrix[:, :3], left / np.sqrt(3), atol=1e-6)
    keep = np.arange(50) % 3 != 0
    wanted = matrix[keep].copy()
    kept = keep_rows(matrix, keep, chunk=4)
    assert np.shares_memory(kept, matrix) and np.array_equal(kept, wanted)


def test_per_slide_standardisation_removes_a_stain_shift():
    """The same cells on two slides, one scanned darker: standardised over all cells the
    slides separate; within each slide, the copies land on each other."""
    from histocluster.clustering.clusterers import cluster_cells
    from histocluster.clustering.settings import ClusterSettings, KMeansSettings

    rng = np.random.default_rng(0)
    base = pd.DataFrame(rng.normal(size=(100, 11)), columns=MEASURED_COLUMNS)
    base["hematoxylin_mean"] = np.repeat([0.0, 3.0], 50)  # two cell types
    dark = base.copy()
    dark[["hematoxylin_mean", "eosin_mean"]] += 6.0  # the darker slide
    cells = pd.concat([base, dark], ignore_index=True)
    cells["slide_id"] = ["a"] * 100 + ["b"] * 100
    cells["centroid_x"], cells["centroid_y"] = rng.uniform(0, 500, 200), rng.uniform(0, 500, 200)
    settings = ClusterSettings(kmeans=KMeansSettings(n_clusters=2))
    for within, mixed in (("all", False), ("slide", True)):
        morph = MorphologySettings(texture=False, context_neighbours=0)
        x, _ = morphology_embedding(cells, np.full(200, 0.5), morph, within=within)
        labels = cluster_cells(x, cells["slide_id"].to_numpy(), settings).labels
        spans = {len(set(cells.loc[labels == c, "slide_id"])) for c in set(labels)}
        assert spans == ({2} if mixed else {1}), within


def test_standardise_within_groups_in_place_and_out_of_order():
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 1, (40, 3)), rng.normal(10, 5, (60, 3))]).astype(np.float32)
    groups = np.array(["a"] * 40 + ["b"] * 60)
    out = standardise_within(x, groups, inplace=True)
    assert out is x  # contiguous groups: changed in place
    for g in ("a", "b"):
        assert np.allclose(out[groups == g].mean(axis=0), 0, atol=1e-5)
        assert np.allclose(out[groups == g].std(axis=0), 1, atol=1e-3)
    order = rng.permutation(100)  # slides interleaved: same answer row by row
    shuffled = standardise_within(
        np.vstack([rng.normal(0, 1, (40, 3)), rng.normal(10, 5, (60, 3))])[order], groups[order]
    )
    for g in ("a", "b"):
        assert np.allclose(shuffled[groups[order] == g].mean(axis=0), 0, atol=1e-5)


def test_network_features_of_another_network_or_missing_for_some_cells_are_named(small_slide, caplog):
    import logging

    from histocluster.clustering.embedding import MissingFeaturesError, embed
    from histocluster.clustering.settings import ClusteringParams

    path, labels, rgb = small_slide
    slides, _, cells = _tables(path, labels, rgb)
    ids = cells["cell_id"].to_numpy()
    params = ClusteringParams(
        embedders={"morphology": 1.0, "typenet": 1.0},
        morphology=MorphologySettings(texture=False, context_neighbours=0),
    )
    resnet = Embeddings(ids, np.ones((len(ids), 4), np.float32), [f"resnet50:{k}" for k in range(4)])
    with pytest.raises(
        MissingFeaturesError, match="stored resnet50 features: set segmentation.cell_features.deep: typenet"
    ):
        embed(slides, cells, resnet, params)
    first = Embeddings(ids[:1], np.ones((1, 4), np.float32), [f"typenet:{k}" for k in range(4)])
    with caplog.at_level(logging.ERROR):
        out = embed(slides, cells, first, params)
    assert list(out.cell_ids) == list(ids[:1])
    assert f"1 of {len(ids)} cells have no typenet features" in caplog.text


@pytest.mark.parametrize("scale", [1, 2])
def test_pictures_of_an_edge_tile_stop_at_the_slide_edge(small_slide, scale):
    """A tile at the slide's right and bottom edge reaches past it: the pictures of it (the
    segmentation check, the overlays) show only what is on the slide, not a white band."""
    from histocluster.pipelines.annotation.nodes import _check
    from histocluster.wsi.tile_grid import on_slide_size, read_tile_on_slide

    path, _, rgb = small_slide
    height, width = rgb.shape[:2]  # 60 × 120
    tile = tile_record(64, 0.5, x=80, y=30, scale=scale)
    # On the slide: (120 − 80) / scale columns and (60 − 30) / scale rows of the 64² tile.
    assert on_slide_size(tile, (width, height)) == (40 // scale, 30 // scale)
    with open_slide(path) as reader:
        whole, on_slide = read_tile(reader, tile), read_tile_on_slide(reader, tile)
    assert on_slide.shape == (30 // scale, 40 // scale, 3)
    assert np.array_equal(on_slide, whole[: 30 // scale, : 40 // scale])
    assert (whole[30 // scale + 1 :] == 255).all()  # what was cut away is the white fill
    inside = tile_record(16, 0.5, x=0, y=0, scale=scale)  # wholly on the slide: unchanged
    assert on_slide_size(inside, (width, height)) == (16, 16)
    cells = _tables(path, *small_slide[1:])[2]
    figure = _check(str(path), tile, cells, "t", 2)
    assert figure.size == (2 * 2 * (40 // scale) + 8, 2 * (30 // scale) + 22)
