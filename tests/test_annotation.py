"""Annotation outputs: QuPath GeoJSON by QuPath's rules, viewer JSON, pictures, report."""

from __future__ import annotations

import gzip
import json
import re
import uuid

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from histocluster.atomic_files import partial_path
from histocluster.reporting import drawing, qupath
from histocluster.reporting import html_report as report
from histocluster.reporting.annotated_cells import (
    annotated_cells,
    counts,
    slide_cell_stats,
    slide_cells,
    slide_ids,
)
from histocluster.reporting.colours import NOISE_RGB, colour_table, label_colours
from histocluster.reporting.viewer_json import StreamedJSON, viewer_json
from histocluster.segmentation.measurements import measure_cells

from .conftest import tile_record


def _cells() -> pd.DataFrame:
    labels = np.zeros((64, 64), np.int32)
    yy, xx = np.indices(labels.shape)
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 64] = 1
    labels[30:40, 40:55] = 2
    labels[50:58, 5:12] = 3
    rgb = np.full((64, 64, 3), 200, np.uint8)
    cells = measure_cells(labels, rgb, tile_record(64, 0.5, x=1000, y=2000, scale=2), "watershed")
    clusters = pd.DataFrame(
        {
            "cell_id": cells["cell_id"],
            "cluster_id": [0, 1, -1],
            "is_noise": [False, False, True],
            "confidence": [0.9, 0.6, 0.0],
            "map_x": [0.0, 1.0, 2.0],
            "map_y": [0.0, 1.0, 2.0],
        }
    )
    labels_table = pd.DataFrame(
        {
            "cell_id": cells["cell_id"][:2],
            "label": ["lymphocyte", "review"],
            "source": ["human", "none"],
            "confidence": [0.9, 0.0],
        }
    )
    return annotated_cells(cells, clusters, labels_table)


def qupath_rules(collection: dict) -> None:
    """What QuPath's GeoJSON import requires of detections (checked field by field)."""
    assert collection["type"] == "FeatureCollection" and isinstance(collection["features"], list)
    ids = set()
    for feature in collection["features"]:
        assert feature["type"] == "Feature"
        assert str(uuid.UUID(feature["id"])) == feature["id"]  # a UUID string
        ids.add(feature["id"])
        geometry = feature["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon")
        polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
        for rings in polygons:
            for ring in rings:
                assert len(ring) >= 4 and ring[0] == ring[-1]  # closed
                assert all(len(p) == 2 and all(isinstance(v, (int, float)) for v in p) for p in ring)
        geom = shape(geometry)
        assert geom.is_valid and not geom.is_empty and geom.area > 0
        props = feature["properties"]
        assert props["objectType"] == "detection"
        if "classification" in props:  # absent for a cell no one has named
            classification = props["classification"]
            assert isinstance(classification["name"], str) and classification["name"]
            assert classification["name"] != "unlabelled"
            colour = classification["color"]
            assert len(colour) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in colour)
        assert isinstance(props["measurements"], dict)
        assert all(isinstance(v, float) and np.isfinite(v) for v in props["measurements"].values())
    assert len(ids) == len(collection["features"])  # unique


@pytest.mark.parametrize("name", ["cells.geojson", "cells.geojson.gz"])
def test_qupath_geojson_follows_the_rules_and_matches_the_cells(tmp_path, name):
    table = _cells()
    names, colours, legend = colour_table(table, "label")
    table = table.assign(class_name=names.to_numpy(), colour=colours.to_numpy())
    count = qupath.write_feature_collection(tmp_path / name, qupath.features(table, legend))
    assert count == 3 and [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name, "rt") as handle:
            collection = json.load(handle)
    else:
        collection = json.loads((tmp_path / name).read_text())
    qupath_rules(collection)
    by_name = {f["properties"]["name"]: f for f in collection["features"]}
    for row in table.itertuples():
        feature = by_name[row.cell_id]
        assert feature["id"] == qupath.cell_uuid(row.cell_id)  # stable across reruns
        original = shapely.from_wkb(row.polygon)
        assert shape(feature["geometry"]).symmetric_difference(original).area < 1e-3 * original.area
        if row.label == "unlabelled":  # QuPath's convention: no classification, not a class
            assert "classification" not in feature["properties"]
        else:
            assert feature["properties"]["classification"]["name"] == row.label
            assert feature["properties"]["classification"]["color"] == list(legend[row.label])
        assert feature["properties"]["measurements"]["Area µm^2"] == pytest.approx(row.area_um2)
        assert feature["properties"]["measurements"]["Cluster"] == row.cluster_id
    assert table.label[2] == "unlabelled"  # noise, no label
    assert "classification" not in by_name[table.cell_id[2]]["properties"]


def test_qupath_features_made_in_blocks_are_those_of_the_whole_table():
    """Blocks of 2 cells (the slide's geometry is encoded block by block, not all at once)
    give the same features, in the same order, as one block of every cell."""
    table = _cells()
    names, colours, legend = colour_table(table, "label")
    table = table.assign(class_name=names.to_numpy(), colour=colours.to_numpy())
    whole = list(qupath.features(table, legend, block=len(table)))
    blocks = list(qupath.features(table, legend, block=2))
    assert len(whole) == len(table) == 3 and blocks == whole
    assert [json.loads(f)["properties"]["name"] for f in blocks] == list(table["cell_id"])


def test_slide_cells_is_the_table_itself_on_a_one_slide_run():
    table = _cells()
    assert slide_ids(table) == [table["slide_id"].iloc[0]]
    assert slide_cells(table, table["slide_id"].iloc[0]) is table  # no copy of a big table
    two = pd.concat(
        [table, table.assign(slide_id="other", cell_id=table["cell_id"] + "b")], ignore_index=True
    )
    assert slide_ids(two) == sorted([table["slide_id"].iloc[0], "other"])
    other = slide_cells(two, "other")
    assert list(other["cell_id"]) == list(table["cell_id"] + "b") and (other["slide_id"] == "other").all()


def test_geojson_is_streamed_not_built(tmp_path):
    """A generator of 20,000 features is written while it runs, not listed first: by the
    time the 15,000th feature is asked for, most of the earlier ones are on disk."""
    on_disk_while_producing = []

    def many():
        for k in range(20_000):
            if k == 15_000:
                on_disk_while_producing.append(partial_path(tmp_path / "big.geojson").stat().st_size)
            yield {"type": "Feature", "id": str(uuid.uuid4()), "geometry": None, "properties": {}}

    assert qupath.write_feature_collection(tmp_path / "big.geojson", many()) == 20_000
    one = len(json.dumps({"type": "Feature", "id": str(uuid.uuid4()), "geometry": None, "properties": {}}))
    assert on_disk_while_producing and on_disk_while_producing[0] > 14_000 * one
    assert len(json.loads((tmp_path / "big.geojson").read_text())["features"]) == 20_000


def test_viewer_json_is_in_level0_pixels_with_mpp():
    table = _cells()
    slide = pd.Series(
        {"path": "s.svs", "width": 5000, "height": 4000, "mpp_x": 0.25, "mpp_y": 0.25}, name="s"
    )
    tiles = pd.DataFrame([tile_record(64, 0.5, x=1000, y=2000, scale=2)]).set_index("tile_id")
    viewer = viewer_json(slide, tiles, table).as_dict()
    assert viewer["mpp_x"] == 0.25 and viewer["coordinates"] == "level-0 pixels of the slide"
    (tile,) = viewer["tiles"]
    assert (tile["x"], tile["y"], tile["w"], tile["h"]) == (1000, 2000, 128, 128)
    cells = {c["cell_id"]: c for c in tile["cells"]}
    first = cells[table.cell_id[0]]
    assert first["pred_class"] == "lymphocyte" and first["cluster_id"] == 0
    xs, ys = np.array(first["polygon"]).T
    assert (
        1000 <= xs.min() and xs.max() <= 1128 and 2000 <= ys.min() and ys.max() <= 2128
    )  # level 0, not tile px
    assert first["bbox"][0] <= first["centroid"][0] <= first["bbox"][2]


def test_label_colours_are_stable_across_processes_and_unsure_is_grey_or_magenta():
    """The same names get the same colours in another interpreter (another hash seed), so
    every picture, the GeoJSON and the report of every run agree."""
    import subprocess
    import sys

    names = ["lymphocyte", "fibroblast", "plasma cell"]
    code = f"from histocluster.reporting.colours import label_colours; print(label_colours({names!r}))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    ).stdout.strip()
    assert other == str(label_colours(names))
    assert label_colours(["unlabelled"]) == {"unlabelled": (128, 128, 128)}
    assert label_colours(["review"]) == {"review": (255, 0, 255)}


def test_label_colours_of_a_run_are_distinct_and_known_types_are_conventional():
    from itertools import combinations

    from skimage.color import rgb2lab

    from histocluster.reporting.colours import MIN_DISTANCE, label_colours

    def distance(a, b):  # CIE76 ΔE, computed here independently of the module
        lab = rgb2lab(np.array([a, b], dtype=float).reshape(2, 1, 3) / 255).reshape(2, 3)
        return float(np.linalg.norm(lab[0] - lab[1]))

    made_up = [f"cell type {k}" for k in range(25)]
    runs = [
        ["fibroblast", "keratin flakes"],  # hashed to two near-identical greens before
        ["unlabelled", "review", "tumour", "stroma", "lymphocyte", "necrosis", "other", "epithelial"],
        ["fibroblast", "stroma", "connective"],  # three names of one conventional colour
        ["artefact", "necrotic", "other", "unlabelled", "review", "epithelial", "lymphocyte"],
        made_up,
        made_up[:12] + ["tumour", "lymphocyte", "unlabelled", "review", "plasma cell", "macrophage"],
    ]
    for names in runs:
        colours = label_colours(names)
        assert sorted(colours) == sorted(set(names))
        closest = min(distance(a, b) for a, b in combinations(colours.values(), 2))
        assert closest >= MIN_DISTANCE >= 30, (names, closest)
    conventional = label_colours(["Tumour", "stroma", "immune cells", "necrosis", "other"])
    assert conventional == {  # QuPath's own colours for its default classes
        "Tumour": (200, 0, 0),
        "stroma": (150, 200, 150),
        "immune cells": (160, 90, 160),
        "necrosis": (50, 50, 50),
        "other": (255, 200, 0),
    }
    assert label_colours(["Artefact", "necrotic", "unlabelled"])["Artefact"] == (255, 255, 255)


def test_overlay_draws_outlines_where_the_cells_are():
    table = _cells()
    rgb = np.full((64, 64, 3), 255, np.uint8)
    tile = tile_record(64, 0.5, x=1000, y=2000, scale=2)
    colours = pd.Series([(255, 0, 0)] * len(table))
    image = np.asarray(drawing.tile_overlay(rgb, tile, table, colours, None, False, 0))
    red = (image[..., 0] == 255) & (image[..., 1] == 0)
    assert red[10:31, 10:31].any() and red[29:41, 39:56].any()  # around cells 1 and 2
    assert not red[:5, :].any()  # nothing far from the cells
    grey = (image == NOISE_RGB).all(axis=-1)
    assert grey[49:59, 4:13].any()  # the noise cell, drawn distinctly


def test_overlay_texts_never_cover_one_another():
    """Two cells side by side and one far away, each with a text: the less confident of the
    pair gets none (its box would overlap the other's), so every text written can be read."""
    from skimage.measure import label, regionprops

    square = [shapely.box(x, 100, x + 8, 108) for x in (20, 26, 120)]
    cells = pd.DataFrame(
        {
            "polygon": shapely.to_wkb(square),
            "bbox_x0": [20.0, 26.0, 120.0],
            "bbox_y0": [100.0] * 3,
            "bbox_x1": [28.0, 34.0, 128.0],
            "bbox_y1": [108.0] * 3,
            "cluster_confidence": [0.9, 0.5, 0.8],
        }
    )
    image = Image.new("RGB", (200, 200), (0, 0, 0))
    colours = pd.Series([(255, 0, 0)] * 3)
    texts = pd.Series(["A 0.90", "B 0.50", "C 0.80"])
    drawn = np.asarray(drawing.draw_cells(image, cells, lambda x, y: (x, y), colours, texts, max_texts=10))
    red = (drawn == (255, 0, 0)).all(axis=-1)  # the outlines left uncovered
    boxes = regionprops(label(drawn.any(axis=-1) & ~red))  # each text box with its text
    assert len(boxes) == 2  # one box by the pair, one by the far cell
    near, far = sorted(boxes, key=lambda b: b.centroid[1])
    assert near.bbox[1] == pytest.approx(far.bbox[1] - 100, abs=1)  # the pair's box is A's, at x 20
    assert near.area == far.area  # not A's and B's boxes run together


def test_overlay_texts_leave_out_the_word_unlabelled():
    """Before a cluster is named its cells' texts are the cluster and confidence only; once
    named, the name stands between them (and a name is never dropped, even 'review')."""
    texts = drawing.overlay_texts([14, 3, 5], ["unlabelled", "tumour", "review"], [0.14, 0.8251, 0.5])
    assert texts.tolist() == ["14 0.14", "3 tumour 0.83", "5 review 0.50"]


def test_gallery_has_a_tile_per_crop_and_a_title():
    crops = [np.full((32, 32, 3), 30 * k, np.uint8) for k in range(7)]
    image = drawing.gallery(crops, [f"c{k}" for k in range(7)], "cluster 3: 7 cells\nlymphocyte", columns=5)
    assert image.width == 5 * 38 + 6 and image.height == 40 + 2 * (32 + 14 + 6) + 6
    empty = drawing.gallery([], [], "cluster 9", columns=5)
    assert empty.width > 0


def _report(
    table: pd.DataFrame,
    slide_id: str = "s<1>",
    checks: pd.DataFrame | None = None,
    clustered_on: str = "",
    scale: dict | None = None,
    summary_columns: dict | None = None,
    vocabulary: list[str] | None = None,
    picture_slides: int | None = None,
) -> str:
    slides = pd.DataFrame(
        [
            {
                "slide_id": slide_id,
                "status": "ok",
                "error": None,
                "width": 64,
                "height": 64,
                "mpp_x": 0.5,
                "mpp_y": 0.5,
                "mpp_source": "parameter",
                "mpp_evidence": None,
            }
            | (scale or {})
        ]
    )
    table = table.assign(slide_id=slide_id)
    summary = pd.DataFrame(
        {"cluster_id": [0, 1], "size": [1, 1], "noise": [False, False], "n_slides": [1, 1]}
        | (summary_columns or {})
    )
    labels = pd.DataFrame({"cluster_id": [0], "label": ['<b>bold</b> & "x"'], "status": ["labelled"]})
    counts = {"all": {"cells": 3, "labels": {'<b>bold</b> & "x"': 2, "unlabelled": 1}}}
    red = Image.new("RGB", (20, 10), "red")
    pictures = {
        "tiling": {slide_id: red},
        "overview": {slide_id: lambda: red},
        "gallery": {"cluster_000": red},
        "plot": {"cluster_map": red, "cluster_sizes": red, "label_counts": red},
    }
    tiles = pd.DataFrame({"tile_id": ["t"]})
    quality = pd.DataFrame({"tile_id": ["t"], "slide_id": [slide_id], "keep": [True], "reason": [""]})
    return report.build_report(
        slides,
        tiles,
        quality,
        slide_cell_stats(table),
        summary,
        labels,
        counts,
        pictures,
        "label",
        checks,
        workbench=report.Workbench(vocabulary=vocabulary or []),
        clustered_on=clustered_on,
        picture_slides=picture_slides,
    )


def test_report_says_what_the_clusters_were_made_from():
    from histocluster.clustering.settings import ClusteringParams

    values = ClusteringParams(embedders={"morphology": 1.0, "typenet": 0.5}).model_dump()
    words = report.clustering_in_words(values)
    assert words == (
        "morphology features (weight 1) + type-network features (weight 0.5), standardised within "
        "each slide; PCA to 50 dimensions; k-means (one cluster per 100 cells), across slides"
    )
    page = _report(_cells(), clustered_on=words)
    clusters = page[page.index('<section id="clusters">') : page.index('<section id="galleries">')]
    assert f'<p class="clustered-on">Clustered on {words}.</p>' in clusters
    assert 'class="clustered-on"' not in _report(_cells())  # nothing said when nothing is known


def test_report_shows_a_slide_that_fails_its_check_in_red_with_the_fix():
    table = _cells()
    checks = pd.DataFrame(
        [
            {
                "slide_id": "s<1>",
                "status": "check",
                "verdict": "at 0.5 µm/px assumed, tiling.default_mpp: 62 cells per mm² of tissue (usual 150–30,000)",
                "fix": "give s.svs's true µm/px in data/01_raw/slides/slides.csv",
                "cells_per_mm2": 62.0,
                "median_area_um2": 17.7,
            }
        ]
    )
    page = _report(table, checks=checks)
    card = page[page.index('<section id="slides">') : page.index('<section id="filtering">')]
    assert (
        '<p class="check-bad"><b>CHECK:</b> at 0.5 µm/px assumed, tiling.default_mpp: 62 cells per mm²'
        in card
    )
    assert "<b>Fix:</b> give s.svs&#39;s true µm/px in data/01_raw/slides/slides.csv" in card
    assert "(assumed, tiling.default_mpp)" in card and ".check-bad{color:#b00" in page
    ok = _report(table, checks=checks.assign(status="ok", cells_per_mm2=1855.0, median_area_um2=23.5))
    assert "1,855 cells per mm² of tissue, median nucleus 23.5 µm²: in the usual range" in ok
    assert 'class="check-bad"' not in ok


def test_report_is_one_page_with_every_section_and_says_what_is_missing():
    page = _report(_cells())
    assert page.startswith("<!DOCTYPE html>") and page.count("<section") == len(report.SECTIONS)
    assert len(re.findall(r'src="data:image/webp;base64,[A-Za-z0-9+/=]+"', page)) >= 5
    assert "no clusters to show" not in page  # one gallery was given
    empty = _report(_cells().iloc[:0])
    assert "no cells were found" in empty and "no clusters: there are no cells" in empty
    assert "http" not in page  # nothing fetched from elsewhere


def test_report_escapes_names_and_embeds_json_that_parses():
    """A label or slide id with markup in it is shown as text; the summary in the
    <script> tag is JSON that JSON.parse (here json.loads) reads."""
    page = _report(_cells())
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "s<1>" not in page and "s&lt;1&gt;" in page
    (blob,) = re.findall(r'<script type="application/json" id="summary">(.*?)</script>', page, re.S)
    summary = json.loads(blob)
    assert summary["cells"] == "3" and summary["coloured by"] == "label"


def test_viewer_json_is_written_as_a_stream(tmp_path):
    """Items are written while they are produced (the partial file grows before the last
    item is asked for), and the file holds exactly the header and the items."""
    from histocluster.datasets import StreamedJSONDataset

    on_disk_while_producing = []
    partial = partial_path(tmp_path / "v.json")

    def items():
        for k in range(20_000):
            if k == 15_000:
                on_disk_while_producing.append(partial.stat().st_size)
            yield {"k": k}

    dataset = StreamedJSONDataset(filepath=str(tmp_path / "v.json"))
    dataset.save(StreamedJSON({"slide_id": "s", "mpp_x": 0.5}, "tiles", items()))
    assert on_disk_while_producing and on_disk_while_producing[0] > 14_000 * len('{"k":1000},')
    loaded = dataset.load()
    assert loaded["slide_id"] == "s" and loaded["tiles"] == [{"k": k} for k in range(20_000)]
    dataset.save(lambda: StreamedJSON({}, "tiles", iter([])))
    assert dataset.load() == {"tiles": []}


def test_check_tiles_are_the_densest_the_darkest_then_spread():
    tiles = pd.DataFrame(
        {
            "slide_id": "s",
            "tile_id": ["a", "b", "c", "d", "e"],
            "x": [0, 1000, 2000, 5000, 9000],
            "y": 0,
            "w": 512,
            "h": 512,
        }
    )
    quality = pd.DataFrame(
        {
            "tile_id": list("abcde"),
            "keep": [True, True, True, True, False],
            "dark_ratio": [0.1, 0.5, 0.0, 0.0, 0.9],
        }
    )
    cells = pd.DataFrame({"tile_id": ["a"] * 3 + ["c"] * 9 + ["e"] * 20})
    chosen = drawing.check_tiles(tiles, quality, cells, 3)
    # c has most cells, b most dark pixels (e is darker but was rejected), d is farthest from both
    assert chosen[["tile_id", "why", "cells"]].values.tolist() == [
        ["c", "densest", 9],
        ["b", "darkest", 0],
        ["d", "spread", 0],
    ]
    assert (
        len(drawing.check_tiles(tiles, quality, cells, 10)) == 4
        and drawing.check_tiles(tiles, quality, cells, 0).empty
    )


def test_segmentation_check_outlines_every_given_cell_beside_the_raw_tile():
    import shapely

    rgb = np.full((64, 64, 3), 200, np.uint8)
    tile = {"x": 100, "y": 200, "w": 128, "h": 128, "out_w": 64, "out_h": 64}  # level 0 is 2× the tile
    square = shapely.box(100 + 20, 200 + 20, 100 + 60, 200 + 60)  # tile px 10–30
    cells = pd.DataFrame({"polygon": [shapely.to_wkb(square)]})
    image = np.asarray(drawing.segmentation_check(rgb, tile, cells, "t", zoom=2))
    header, width = 22, 128
    left, right = image[header:, :width], image[header:, width + 8 :]
    assert image.shape == (header + 128, 2 * width + 8, 3)
    assert (left == 200).all()  # the raw tile, untouched
    green = np.all(right == drawing.CHECK_RGB, axis=-1)
    assert green[20, 20:60].all() and green[59:61, 20:60].any(axis=0).all()  # top and bottom edge at 2×
    assert not green[30:50, 30:50].any()  # inside stays the tile


def test_report_says_how_an_estimated_scale_was_found():
    """A slide whose µm/px was estimated from its nuclei: the card says so, with the
    evidence and the file that would fix it; a slide with metadata shows no such line."""
    evidence = "6 tissue regions: share of sure nucleus pixels 0.000 at 0.25, 0.005 at 0.5, 0.036 at 1 µm/px; chose 1 µm/px"
    page = _report(
        _cells(), scale={"mpp_x": 1.0, "mpp_y": 1.0, "mpp_source": "estimated", "mpp_evidence": evidence}
    )
    card = page[page.index('<section id="slides">') : page.index('<section id="filtering">')]
    assert "1.000 µm/px (estimated from the nuclei)" in card
    assert "estimated from the nuclei" in card and "0.036 at 1 µm/px; chose 1 µm/px" in card
    assert "data/01_raw/slides/slides.csv" in card
    plain = _report(_cells(), scale={"mpp_source": "metadata"})
    assert "estimated from the nuclei" not in plain


def test_overlays_read_a_tile_shared_by_two_clusters_once_and_drop_it_after_its_last_picture(monkeypatch):
    import contextlib

    from histocluster.pipelines.annotation import nodes

    reads = []

    def fake_read(reader, tile):
        reads.append(tile["tile_id"])
        return np.full((4, 4, 3), len(reads), np.uint8)

    monkeypatch.setattr(nodes, "open_slide", lambda path: contextlib.nullcontext(None))
    monkeypatch.setattr(nodes, "read_tile_on_slide", fake_read)
    shared = nodes._SharedTiles()
    for tile_id in ("a", "b", "a"):
        shared.want(tile_id)
    first = shared.read("slide", {"tile_id": "a"})
    assert "a" in shared.pixels  # a second picture still needs it
    shared.read("slide", {"tile_id": "b"})
    again = shared.read("slide", {"tile_id": "a"})
    assert reads == ["a", "b"] and (again == first).all()
    assert shared.pixels == {}  # nothing kept once every picture is drawn


def test_the_report_shows_model_and_cost_only_when_a_model_was_asked():
    from histocluster.reporting.html_report import _label_table

    never = pd.DataFrame(
        {"cluster_id": [0, 1], "label": ["unlabelled"] * 2, "votes": ["{}"] * 2, "model": [None] * 2,
         "cost_usd": [float("nan")] * 2}
    )  # fmt: skip
    assert list(_label_table(never).columns) == ["cluster_id", "label"]
    once = never.assign(model=["gpt-4o", None], cost_usd=[0.01, float("nan")])
    assert list(_label_table(once).columns) == ["cluster_id", "label", "model", "cost_usd"]


def test_spatialdata_export_is_optional_and_never_leaves_another_runs_zarr(tmp_path, monkeypatch):
    import importlib.util

    from histocluster.datasets import SpatialDataDataset
    from histocluster.errors import UserInputError
    from histocluster.pipelines.annotation.nodes import export_spatialdata
    from histocluster.reporting.settings import AnnotationParams

    old = tmp_path / "cells.zarr"
    (old / "tables").mkdir(parents=True)
    dataset = SpatialDataDataset(filepath=str(old))
    never = export_spatialdata(None, None, None, {}, AnnotationParams(spatialdata=False))
    assert never == {}
    dataset.save(never)  # this run made none: an older run's zarr must not pass for this one's
    assert not old.exists() and dataset.load() is None
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "spatialdata" else real_find_spec(name, *a),
    )
    assert export_spatialdata(None, None, None, {}, AnnotationParams(spatialdata="auto")) == {}
    with pytest.raises(UserInputError, match=r'pip install -e "\.\[scverse\]"'):
        export_spatialdata(None, None, None, {}, AnnotationParams(spatialdata=True))


def test_spatialdata_outlines_written_in_blocks_read_back_in_table_order(tmp_path):
    """Outlines written 3 at a time (two interleaved slides, one with a multipolygon) read back
    with spatialdata as each slide's outlines in table order, every table row pointing at its
    own; the GeoParquet metadata (rows, bounding box, geometry types) is what geopandas writes
    for the same outlines."""
    import anndata
    import geopandas
    import pyarrow.parquet as pq
    import spatialdata

    from histocluster.reporting.spatialdata_export import CellsSpatialData

    rng = np.random.default_rng(0)
    polygons = [shapely.box(x, y, x + 5, y + 3) for x, y in rng.uniform(0, 500, (10, 2))]
    polygons.append(shapely.MultiPolygon([shapely.box(900, 0, 905, 4), shapely.box(910, 0, 912, 2)]))
    table = pd.DataFrame(
        {
            "cell_id": [f"c{k}" for k in range(11)],
            "slide_id": ["s-1", "s-2"] * 5 + ["s-2"],
            "polygon": shapely.to_wkb(polygons),
        }
    )
    order = rng.permutation(11)  # the AnnData's rows in another order than the table's
    adata = anndata.AnnData(
        X=rng.random((11, 2)).astype(np.float32),
        obs=pd.DataFrame(index=pd.Index(table["cell_id"].to_numpy()[order], name="cell_id")),
    )
    slides = pd.DataFrame({"slide_id": ["s-1", "s-2"], "width": [1000, 1000], "height": [600, 600]})
    thumbnail = Image.new("RGB", (100, 60), (200, 100, 50))
    CellsSpatialData(adata, table, slides, {"s-1": thumbnail}, block=3).write(tmp_path / "cells.zarr")

    sdata = spatialdata.read_zarr(tmp_path / "cells.zarr")
    assert set(sdata.shapes) == {"s_1_nuclei", "s_2_nuclei"} and set(sdata.images) == {"s_1_thumbnail"}
    for slide_id, key in (("s-1", "s_1_nuclei"), ("s-2", "s_2_nuclei")):
        mine = [p for p, s in zip(polygons, table["slide_id"], strict=True) if s == slide_id]
        read = sdata.shapes[key].geometry.to_numpy()
        assert len(read) == len(mine) and all(shapely.equals_exact(read, mine, tolerance=0))
        written = tmp_path / "cells.zarr" / "shapes" / key / "shapes.parquet"
        assert pq.ParquetFile(written).num_row_groups == -(-len(mine) // 3)
        reference = tmp_path / f"{key}.parquet"
        geopandas.GeoDataFrame(geometry=mine).to_parquet(reference)
        ours, theirs = (json.loads(pq.read_schema(p).metadata[b"geo"]) for p in (written, reference))
        assert ours["columns"]["geometry"] == theirs["columns"]["geometry"]
        ours, theirs = (json.loads(pq.read_schema(p).metadata[b"pandas"]) for p in (written, reference))
        assert ours["index_columns"] == theirs["index_columns"]
    cells = sdata.tables["cells"]
    for cell_id, polygon in zip(table["cell_id"], polygons, strict=True):
        region, instance = cells.obs.loc[cell_id, ["region", "instance_id"]]
        assert sdata.shapes[region].geometry.iloc[int(instance)].equals_exact(polygon, tolerance=0)
    assert np.array_equal(cells.X, adata.X)


def test_embedding_rows_follow_the_cell_table_in_blocks_with_nan_for_missing_cells():
    """The AnnData's embedding rows are the cells' own, in the table's order, whether the
    embedding comes in that order (used as is) or shuffled and short of a cell (copied a
    block of rows at a time; the missing cell gets NaN)."""
    from histocluster.reporting.anndata_export import _rows_in_order

    cell_ids = pd.Index([f"c{k}" for k in range(7)])
    matrix = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    same = _rows_in_order(cell_ids, cell_ids.to_numpy(), matrix)
    assert np.array_equal(same, matrix)
    order = np.array([4, 0, 6, 2, 5, 1])  # c3 has no embedding
    rows = _rows_in_order(cell_ids, cell_ids.to_numpy()[order], matrix[order], block=2)
    assert rows.dtype == np.float32 and np.isnan(rows[3]).all()
    kept = [0, 1, 2, 4, 5, 6]
    assert np.array_equal(rows[kept], matrix[kept])


def test_objects_named_as_not_cells_are_left_out_of_the_cell_figures_in_any_case():
    """Objects named ``artefact``/``Debris`` (annotation.not_cells, any case) are counted per
    slide apart from the cells; the cells' mean area and hematoxylin leave them out; the
    report says how many were left out, on the run summary and the slide's card."""
    table = pd.DataFrame(
        {
            "cell_id": list("abcdef"),
            "slide_id": ["s1", "s1", "s1", "s2", "s2", "s2"],
            "label": ["lymphocyte", "Artefact", "tumour", "debris", "debris", "lymphocyte"],
            "area_um2": [20.0, 500.0, 40.0, 300.0, 100.0, 10.0],
            "hematoxylin_mean": [1.0, 9.0, 2.0, 9.0, 9.0, 3.0],
        }
    )
    stats = slide_cell_stats(table, ["artefact", "DEBRIS"]).set_index("slide_id")
    assert stats.loc["s1", ["cells", "artefacts"]].tolist() == [2, 1]
    assert stats.loc["s2", ["cells", "artefacts"]].tolist() == [1, 2]
    assert stats.loc["s1", "mean_area_um2"] == pytest.approx(30.0)
    assert stats.loc["s2", "mean_hematoxylin"] == pytest.approx(3.0)
    everything = slide_cell_stats(table).set_index("slide_id")  # nothing named as not a cell
    assert everything["cells"].tolist() == [3, 3] and everything["artefacts"].tolist() == [0, 0]
    counted = counts(table.assign(cluster_id=[0, 1, 0, 1, 1, 0]), ["artefact", "DEBRIS"])
    assert counted["all"]["cells"] == 6 and counted["all"]["not_cells"] == 3
    assert [counted["slides"][s]["not_cells"] for s in ("s1", "s2")] == [1, 2]
    assert counted["slides"]["s2"]["labels"] == {"debris": 2, "lymphocyte": 1}

    cells = _cells().assign(label=["lymphocyte", "artefact", "review"])
    assert "named as not cells" not in _report(cells)  # no not_cells given: all are cells
    slides = pd.DataFrame(
        [{"slide_id": "s", "status": "ok", "error": None, "width": 64, "height": 64, "mpp_x": 0.5,
          "mpp_y": 0.5, "mpp_source": "parameter", "mpp_evidence": None}]
    )  # fmt: skip
    summary = pd.DataFrame({"cluster_id": [0], "size": [3], "noise": [False], "n_slides": [1]})
    labels = pd.DataFrame({"cluster_id": [0], "label": ["lymphocyte"], "status": ["labelled"]})
    stats = slide_cell_stats(cells.assign(slide_id="s"), ["artefact"])
    page = report.build_report(
        slides, pd.DataFrame({"tile_id": ["t"]}), pd.DataFrame({"tile_id": ["t"], "slide_id": ["s"],
        "keep": [True], "reason": [""]}), stats, summary, labels, {}, {}, "label",
    )  # fmt: skip
    run = page[: page.index('<section id="slides">')]
    assert "<th>cells</th><td>2 (+1 named as not cells, left out)</td>" in run
    card = page[page.index('<section id="slides">') : page.index('<section id="filtering">')]
    assert "2 cells (+1 named as not cells, left out)" in card


def test_an_overlay_outlines_its_less_confident_cells_thin_not_hide_them():
    """With ``filtered`` (the default) the cells below ``min_confidence`` are still outlined,
    1 px in their colour, so a nucleus without an outline on an overlay is a missed one."""
    from histocluster.pipelines.annotation.nodes import _overlay
    from histocluster.reporting.settings import AnnotationParams

    table = _cells().assign(colour=[(255, 0, 0)] * 3, cluster_confidence=[0.05, 0.9, 0.0])
    tile = tile_record(64, 0.5, x=1000, y=2000, scale=2)

    class Pixels:  # the tile as read: plain white
        def read(self, path, tile):
            return np.full((64, 64, 3), 255, np.uint8)

    def red_in_first_cell(filtered: bool) -> int:
        params = AnnotationParams.model_validate({"overlay": {"filtered": filtered, "texts": False}})
        image = np.asarray(_overlay("slide", tile, table, np.arange(3), params, Pixels()))
        return int(((image[..., 0] == 255) & (image[..., 1] == 0))[10:31, 10:31].sum())

    thin, full = red_in_first_cell(True), red_in_first_cell(False)
    assert 0 < thin < full  # outlined, and thinner than a confident cell's outline


def test_the_workbench_offers_the_type_networks_suggestions_only_when_there_are_some():
    plain = _report(_cells())
    assert 'id="fill-network"' not in plain and "type network:" not in plain
    page = _report(
        _cells(),
        summary_columns={"network_type": ["others", None], "network_share": [0.75, None]},
        vocabulary=["epithelial", "other"],
    )
    card = page[page.index('id="cluster-0"') : page.index('id="cluster-1"')]
    # In the vocabulary's spelling ("others" → "other"), with the share of the cluster's cells.
    assert '<span class="network-type">other</span> (75% of its cells)' in card
    assert 'data-network="other"' in card
    assert 'id="fill-network"' in page and 'data-network=""' in page[page.index('id="cluster-1"') :]
    # A cluster without a name says so, without a source "(none)" after it.
    unnamed = page[page.index('id="cluster-1"') :]
    assert 'now: <b class="current-label">unlabelled</b></p>' in unnamed and "(none)" not in page


def test_a_slide_overview_outlines_the_cells_of_a_small_slide_and_dots_those_of_a_large_one():
    import shapely.affinity

    cell = _cells().iloc[[0]]  # a disc 17 tile px across, 2 level-0 px a tile px: 34 across
    here = cell.assign(  # moved to the slide's top-left corner
        centroid_x=cell["centroid_x"] - 1000,
        centroid_y=cell["centroid_y"] - 2000,
        bbox_x0=cell["bbox_x0"] - 1000,
        bbox_x1=cell["bbox_x1"] - 1000,
        polygon=[
            shapely.to_wkb(
                shapely.affinity.translate(shapely.from_wkb(cell["polygon"].iloc[0]), -1000, -2000)
            )
        ],
    )
    red = pd.Series([(255, 0, 0)])
    thumbnail = np.full((80, 80, 3), 255, np.uint8)

    def red_box(image):
        ys, xs = np.nonzero((np.asarray(image) == (255, 0, 0)).all(axis=-1))
        return xs.min(), ys.min(), xs.max(), ys.max()

    # A small slide (80 level-0 px drawn 800 px across): the nucleus spans ~340 picture px.
    small = drawing.slide_overview(thumbnail, 80, here, red, {}, "small", min_side=800)
    x0, y0, x1, y1 = red_box(small)
    assert 300 <= x1 - x0 <= 360 and 300 <= y1 - y0 <= 360  # its outline, at its size …
    assert tuple(np.asarray(small)[(y0 + y1) // 2, (x0 + x1) // 2]) != (255, 0, 0)  # … not filled
    # A large slide (100 level-0 px per picture px): the nucleus is under a pixel: a dot.
    large = drawing.slide_overview(thumbnail, 8000, cell, red, {}, "large", min_side=80)
    x0, y0, x1, y1 = red_box(large)
    assert x1 - x0 <= 4 and y1 - y0 <= 4


def test_the_slides_a_cluster_spans_read_in_one_line_however_many_there_are():
    from histocluster.reporting.drawing import gallery_title, slides_in_words

    assert slides_in_words({"b": 3, "a": 3, "c": 9}) == "c 9, a 3, b 3"  # most first, ties by name
    cohort = {f"s{k:03d}": k + 1 for k in range(200)}  # 200 slides
    words = slides_in_words(cohort, most=4)
    assert words == "s199 200, s198 199, s197 198, s196 197 and 196 more slides (19,306 cells)"
    assert sum(range(1, 197)) == 19_306  # the rest, counted by hand: 1 + 2 + … + 196
    assert slides_in_words({f"s{k}": 1 for k in range(5)}, most=4).count(",") == 4  # 5 slides: all shown
    assert slides_in_words({}) == "no slide"
    title = gallery_title({"cluster_id": 3, "size": 20_100, "slide_counts": json.dumps(cohort)}, None)
    assert (
        title.splitlines()[0].startswith("cluster 3: 20,100 cells (s199 200,") and "196 more slides" in title
    )


def test_a_cohorts_report_embeds_the_pictures_of_a_few_slides_failed_checks_first():
    from histocluster.reporting.html_report import slides_pictured

    ids = [f"s{k}" for k in range(6)]
    checks = {"s4": {"status": "check"}, "s1": {"status": "ok"}, "s5": {"status": "no cells"}}
    assert slides_pictured(ids, checks, 3) == {"s4", "s5", "s0"}  # what needs a look, then in order
    assert slides_pictured(ids, checks, None) == set(ids) == slides_pictured(ids, {}, 6)
    assert slides_pictured(ids, checks, 0) == set()
    page = _report(_cells(), picture_slides=0)
    card = page[page.index('<section id="slides">') : page.index('<section id="filtering">')]
    assert "<img" not in card and "data/08_reporting/cell_overview/s&lt;1&gt;.png" in card
    assert "The segmentation checks of 1 more slides are in" in page
    default = _report(_cells())
    assert (
        "<img" in default[default.index('<section id="slides">') : default.index('<section id="filtering">')]
    )
    assert "more slides are in" not in default
