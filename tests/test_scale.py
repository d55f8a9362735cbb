"""A slide's physical scale: the person's table, the metadata, the objective power, the
default; and the slide checks that say when cells do not look like tissue at that scale."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from histocluster.segmentation.settings import PlausibleRanges
from histocluster.segmentation.slide_checks import CHECK_COLUMNS, check_slides
from histocluster.wsi.scale import ScaleTableError, objective_mpp, read_scale_table, resolve_scale

from .conftest import kedro_run, load

SLIDES = ["a.svs", "b.ndpi"]


def test_objective_power_gives_ten_over_power():
    assert objective_mpp(20) == 0.5 and objective_mpp(40) == 0.25
    assert objective_mpp(None) is None and objective_mpp(0) is None and objective_mpp(float("nan")) is None


def test_the_scale_comes_from_the_table_then_metadata_then_objective_then_default():
    assert resolve_scale((0.26, 0.26), 20, (1.0, 1.0), 0.5) == (1.0, 1.0, "table")
    assert resolve_scale((0.26, 0.27), 20, None, 0.5) == (0.26, 0.27, "metadata")
    assert resolve_scale(None, 40, None, 0.5) == (0.25, 0.25, "objective power")
    assert resolve_scale(None, None, None, 0.5) == (0.5, 0.5, "parameter")


def test_a_scale_table_as_a_spreadsheet_saves_it(tmp_path):
    path = tmp_path / "slides.csv"
    assert read_scale_table(path, SLIDES) == {}  # no table: nothing to override
    path.write_bytes(b"\xef\xbb\xbfFile;MPP;mpp_y\r\na.svs;0,25;\r\nb.ndpi;0.5;0.52\r\n;;\r\n")
    assert read_scale_table(path, SLIDES) == {"a.svs": (0.25, 0.25), "b.ndpi": (0.5, 0.52)}


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,um\na.svs,0.5\n", r"needs the columns file,mpp"),
        ("file,mpp\nc.svs,0.5\n", r"line 2: 'c.svs' is not a slide in .* \(slides: a.svs, b.ndpi\)"),
        ("file,mpp\na.svs,0.5\nb.ndpi,0.5\na.svs,0.25\n", r"'a.svs' is given twice, on lines 2 and 4"),
        ("file,mpp\na.svs,half\n", r"line 2: mpp 'half' is not a number"),
        ("file,mpp\na.svs,500\n", r"line 2: mpp 500 µm/px is outside 0.05–20"),
    ],
)
def test_a_scale_table_mistake_names_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "slides.csv"
    path.write_text(text)
    with pytest.raises(ScaleTableError, match=message):
        read_scale_table(path, SLIDES)


def tables(mpp: float = 0.5, source: str = "metadata", n_tiles: int = 4, kept: int = 4, cells: int = 400):
    """A slide of ``n_tiles`` tiles whose 448² px cores are all tissue, ``kept`` of them
    kept, and ``cells`` cells of 30 µm²."""
    slides = pd.DataFrame(
        [
            {
                "slide_id": "s",
                "path": "data/01_raw/slides/s.svs",
                "mpp_x": mpp,
                "mpp_y": mpp,
                "mpp_source": source,
                "status": "ok",
            }
        ]
    )
    tiles = pd.DataFrame(
        [
            {
                "slide_id": "s",
                "tile_id": f"t{i}",
                "core_x0": 0,
                "core_y0": 0,
                "core_x1": 448,
                "core_y1": 448,
                "tissue_fraction": 1.0,
            }
            for i in range(n_tiles)
        ]
    )
    quality = pd.DataFrame(
        [
            {
                "slide_id": "s",
                "tile_id": f"t{i}",
                "keep": i < kept,
                "reason": "ok" if i < kept else "color_variance 1.2 < 5",
            }
            for i in range(n_tiles)
        ]
    )
    table = pd.DataFrame({"slide_id": ["s"] * cells, "area_um2": [30.0] * cells})
    return slides, tiles, quality, table


def test_cells_per_mm2_of_kept_tissue_and_the_median_area():
    (row,) = check_slides(*tables(), PlausibleRanges()).to_dict("records")
    assert list(check_slides(*tables(), PlausibleRanges()).columns) == CHECK_COLUMNS
    tissue = 4 * (448 * 0.5) ** 2 / 1e6  # four cores of 224 µm square
    assert row["tissue_mm2"] == pytest.approx(tissue) and row["cells_per_mm2"] == pytest.approx(400 / tissue)
    assert row["median_area_um2"] == 30.0 and row["status"] == "ok" and row["verdict"] == ""


def test_too_few_cells_at_a_guessed_scale_is_a_check_that_names_the_table_line():
    (row,) = check_slides(*tables(source="parameter", cells=5), PlausibleRanges()).to_dict("records")
    assert row["status"] == "check" and "25 cells per mm² of tissue (usual 150–30,000)" in row["verdict"]
    assert "the scale is probably wrong" in row["verdict"]
    assert "data/01_raw/slides/slides.csv (a line `s.svs,<µm/px>`)" in row["fix"]


def test_an_assumed_scale_is_a_check_even_when_the_cells_look_usual():
    """At twice its true µm/px a slide can still give usual-looking density and areas; a
    scale that nothing stated or confirmed is flagged anyway, with the table line as fix.
    The same cells at a scale from metadata, a table or an estimate are fine."""
    (row,) = check_slides(*tables(source="parameter"), PlausibleRanges()).to_dict("records")
    assert row["status"] == "check" and "its µm/px is not known: 0.5 µm/px assumed" in row["verdict"]
    assert "data/01_raw/slides/slides.csv (a line `s.svs,<µm/px>`)" in row["fix"]
    for source in ("metadata", "table", "estimated", "objective power"):
        (row,) = check_slides(*tables(source=source), PlausibleRanges()).to_dict("records")
        assert row["status"] == "ok", source


@pytest.mark.parametrize(
    "changes, verdict, fix",
    [
        (dict(n_tiles=0, kept=0, cells=0), "no tissue found", "tiling_overview"),
        (
            dict(kept=0, cells=0),
            "every one of its 4 tiles was rejected by the quality checks (most often: color_variance 4)",
            "filtering.thresholds",
        ),
        (dict(cells=0), "the segmenter found no nucleus in 4 kept tiles", "look at the tiles"),
        (
            dict(mpp=8.0, source="table", n_tiles=0, kept=0, cells=0),
            "too coarse to find nuclei",
            "full-resolution scan",
        ),
    ],
)
def test_a_slide_without_cells_says_why(changes, verdict, fix):
    (row,) = check_slides(*tables(**changes), PlausibleRanges()).to_dict("records")
    assert row["status"] == "no cells" and verdict in row["verdict"] and fix in row["fix"], row
    assert math.isnan(row["median_area_um2"])


@pytest.mark.slow
def test_a_slide_without_scale_is_estimated_flagged_when_not_and_the_table_fixes_it(
    project, tcga_slide, kidney_image
):
    """The TCGA slide has no µm/px. By default its scale is estimated from its nuclei
    (1 µm/px) and it gives several hundred cells in 12 tiles, like an explicit 1.0. With
    the estimate off, at the default 0.5 its cells are far too sparse and the check says so,
    naming the table line; with `file,mpp` = 1.0 it is in range. The kidney overview gives
    no cells and says why."""
    root = project([tcga_slide, kidney_image])
    params = {"tiling.max_tiles": 12}
    kedro_run(root, "tiling", **params)
    kedro_run(root, "segmentation")
    slides, checks = load(root, "slides", "slide_checks")
    tcga = checks.set_index("slide_id").loc["tcga-cr-7395-01a-01-ts1"]
    slide = slides.set_index("slide_id").loc["tcga-cr-7395-01a-01-ts1"]
    assert slide["mpp_source"] == "estimated" and slide["mpp_x"] == 1.0, slide.to_dict()
    assert "chose 1 µm/px" in slide["mpp_evidence"]
    assert tcga["status"] == "ok" and tcga["cells"] >= 300, tcga.to_dict()
    kidney = checks.set_index("slide_id").loc["kidney-48-5"]
    assert kidney["status"] == "no cells" and "no tissue found" in kidney["verdict"]

    kedro_run(root, "tiling", **params, **{"tiling.estimate_mpp": False})
    kedro_run(root, "segmentation")
    (checks,) = load(root, "slide_checks")
    tcga = checks.set_index("slide_id").loc["tcga-cr-7395-01a-01-ts1"]
    assert tcga["status"] == "check" and tcga["mpp_source"] == "parameter"
    assert "µm/px is not known" in tcga["verdict"] or "scale is probably wrong" in tcga["verdict"]
    assert "`tcga-cr-7395-01a-01-ts1.svs,<µm/px>`" in tcga["fix"]

    (root / "data" / "01_raw" / "slides" / "slides.csv").write_text(
        "file,mpp\ntcga-cr-7395-01a-01-ts1.svs,1.0\n"
    )
    kedro_run(root, "tiling", **params)
    kedro_run(root, "segmentation")
    slides, checks = load(root, "slides", "slide_checks")
    tcga = checks.set_index("slide_id").loc["tcga-cr-7395-01a-01-ts1"]
    assert slides.set_index("slide_id").loc["tcga-cr-7395-01a-01-ts1", "mpp_source"] == "table"
    assert tcga["status"] == "ok" and tcga["cells"] >= 300, tcga.to_dict()
