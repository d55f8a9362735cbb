"""The tiling and filtering pipelines through real Kedro sessions and the kedro CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from histocluster.wsi.slides import open_slide
from histocluster.wsi.tile_grid import read_tile

from .conftest import kedro_run, kedro_user_error, load, messages

pytestmark = pytest.mark.slow


@pytest.fixture
def messy_project(project, cmu_slide, tcga_slide, kidney_image):
    """The three real slides, a corrupt .svs and a text file."""
    root = project([cmu_slide, tcga_slide, kidney_image])
    raw = root / "data" / "01_raw" / "slides"
    (raw / "broken.svs").write_bytes(b"II*\x00" + b"\x00garbage" * 200)
    (raw / "notes.txt").write_text("not a slide")
    return root


def test_tiling_then_filtering_on_real_slides(messy_project):
    """Tiling, then the segmentation pass (which judges each tile's quality where it reads
    it; threshold foreground for speed), then the filtering pipeline's contact sheets."""
    root = messy_project
    records: list[logging.LogRecord] = []
    kedro_run(root, "tiling", log=records, **{"tiling.estimate_mpp": False})  # the default µm/px path
    kedro_run(root, "segmentation", log=records, **{"segmentation.watershed.foreground": "threshold"})
    kedro_run(root, "filtering", log=records)

    slides, tiles, quality = load(root, "slides", "tiles", "tile_quality")
    by_id = slides.set_index("slide_id")
    assert sorted(by_id.index) == ["broken", "cmu-1-small-region", "kidney-48-5", "tcga-cr-7395-01a-01-ts1"]
    assert by_id.loc["broken", "status"] == "error"
    assert "broken.svs" in by_id.loc["broken", "error"]
    assert (by_id.drop("broken")["status"] == "ok").all()
    assert by_id.loc["tcga-cr-7395-01a-01-ts1", "mpp_source"] == "parameter"
    assert by_id.loc["cmu-1-small-region", "mpp_x"] == pytest.approx(0.499)
    assert by_id.loc["kidney-48-5", "reader"] == "image"
    assert not Path(by_id.loc["cmu-1-small-region", "path"]).is_absolute()  # portable

    counts = tiles.groupby("slide_id").size()
    assert counts.get("kidney-48-5", 0) == 0  # blank glass: no tiles, and a warning
    assert counts["cmu-1-small-region"] >= 10 and counts["tcga-cr-7395-01a-01-ts1"] >= 30
    assert tiles["tile_id"].is_unique
    assert (tiles["tissue_fraction"] >= 0.1).all()
    log = messages(records)
    assert "WARNING Slide kidney-48-5 at 0.5 µm/px: no tile has tissue fraction" in log
    assert "tcga-cr-7395-01a-01-ts1.svs has no µm/px in its metadata" in log
    assert "ERROR Skipping slide data/01_raw/slides/broken.svs" in log
    assert "INFO Slide cmu-1-small-region: " in log and "tiles kept" in log

    assert len(quality) == len(tiles) and set(quality["tile_id"]) == set(tiles["tile_id"])
    assert quality["keep"].any() and not quality["keep"].all()
    assert (quality.loc[quality["keep"], "reason"] == "").all()
    assert quality.loc[~quality["keep"], "reason"].str.len().gt(0).all()

    # Versioned tables: <name>.parquet/<timestamp>/<name>.parquet
    for folder in (
        "02_intermediate/slides.parquet",
        "02_intermediate/tiles.parquet",
        "03_primary/tile_quality.parquet",
    ):
        assert len(list((root / "data" / folder).glob("*/*.parquet"))) == 1
    pictures = root / "data" / "08_reporting"
    assert {p.stem for p in (pictures / "tiling_overview").glob("*.png")} == {
        "cmu-1-small-region",
        "kidney-48-5",
        "tcga-cr-7395-01a-01-ts1",
    }
    assert {p.stem for p in (pictures / "tile_contact_sheet").glob("*.png")} == {
        "cmu-1-small-region",
        "tcga-cr-7395-01a-01-ts1",
    }
    mask = np.asarray(Image.open(root / "data/02_intermediate/tissue_mask/cmu-1-small-region.png"))
    assert set(np.unique(mask)) == {0, 255}


def test_tiles_show_the_slide_at_their_coordinates(project, cmu_slide):
    """Written tile PNGs equal the slide's pixels at the tile's level-0 box; several
    resolutions and max_tiles apply per resolution."""
    root = project([cmu_slide])
    kedro_run(
        root,
        "tiling",
        **{"tiling.write_tile_images": True, "tiling.target_mpp": [0.5, 1.0], "tiling.max_tiles": 4},
    )
    (tiles,) = load(root, "tiles")
    assert sorted(tiles.groupby("target_mpp").size().items()) == [(0.5, 4), (1.0, 4)]
    folder = root / "data" / "02_intermediate" / "tile_image" / "cmu-1-small-region"
    assert len(list(folder.glob("*.png"))) == 8
    tile = tiles[tiles["target_mpp"] == 1.0].iloc[0]
    written = np.asarray(Image.open(folder / f"{tile.tile_id}.png"))
    with open_slide(root / "data" / "01_raw" / "slides" / cmu_slide.name) as reader:
        assert np.array_equal(written, read_tile(reader, tile))
    assert tile.w == round(512 * 1.0 / 0.499)


def test_regions_restrict_and_name_tiles(project, cmu_slide):
    root = project([cmu_slide])
    roi = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[600, 1200], [1600, 1200], [1600, 2200], [600, 2200], [600, 1200]]],
                },
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            }
        ],
    }
    (root / "data" / "01_raw" / "slides" / f"{cmu_slide.stem}.geojson").write_text(json.dumps(roi))
    kedro_run(root)  # the default pipeline: tiling and filtering together
    slides, tiles, quality = load(root, "slides", "tiles", "tile_quality")
    assert set(quality["tile_id"]) == set(tiles["tile_id"])
    assert list(slides.loc[0, "regions"]) == ["Tumor"]
    assert len(tiles) > 0 and set(tiles["region"]) == {"Tumor"}
    # Every tile touches the region.
    assert (
        (tiles.x < 1600) & (tiles.x + tiles.w > 600) & (tiles.y < 2200) & (tiles.y + tiles.h > 1200)
    ).all()
    kedro_run(root, "tiling", **{"tiling.use_regions": False})
    (all_tiles,) = load(root, "tiles")
    assert len(all_tiles) > len(tiles) and all_tiles["region"].isna().all()


def test_filtering_can_be_turned_off(project, cmu_slide):
    root = project([cmu_slide])
    kedro_run(root, "tiling", **{"tiling.max_tiles": 3})
    kedro_run(root, "segmentation", **{"filtering.enabled": False})
    tiles, quality = load(root, "tiles", "tile_quality")
    assert len(quality) == len(tiles) and quality["keep"].all()
    assert (quality["reason"] == "filtering disabled").all()


def test_empty_slide_folder_is_one_clear_message(project):
    root = project([])
    assert "Error: No slides found" in kedro_user_error(root, "--pipelines=tiling")


def test_missing_slide_folder_is_one_clear_message(project):
    root = project([])
    (root / "data" / "01_raw" / "slides").rmdir()
    output = kedro_user_error(root, "--pipelines=tiling")
    assert "does not exist" in output and "Error: No slides found" in output


def test_all_slides_unreadable_lists_each(project, tmp_path):
    bad = tmp_path / "junk.ndpi"
    bad.write_bytes(b"\x00" * 64)
    root = project([bad])
    output = kedro_user_error(root, "--pipelines=tiling")
    assert "None of the 1 slide(s) could be read" in output and "junk.ndpi" in output


def test_a_pipeline_run_before_its_inputs_exist_is_one_clear_message(project, cmu_slide):
    root = project([cmu_slide])
    output = kedro_user_error(root, "--pipelines=segmentation")
    assert "This run needs outputs that no earlier run has made" in output
    assert "slides: made by `kedro run --pipelines=tiling`" in output
    assert "tiles: made by `kedro run --pipelines=tiling`" in output
    assert "Running node" not in output


def test_an_output_folder_that_cannot_be_written_stops_the_run_before_any_work(project, cmu_slide):
    root = project([cmu_slide])
    (root / "data" / "08_reporting").write_text("not a folder")  # a typo'd move, a stale mount
    output = kedro_user_error(root, "--pipelines=tiling")
    assert "Error: The run cannot write its outputs (nothing was run)" in output
    assert "data/08_reporting is a file, not a folder (for tiling_overview_figure)" in output
    assert not (root / "data" / "02_intermediate").exists()  # no slide was read


def test_a_full_disk_is_one_error_line_naming_the_dataset(project, cmu_slide):
    """A real ENOSPC: the slide table's file is /dev/full (this catalog keeps one
    unversioned copy, as a user's may), so the first save fails as on a full disk."""
    root = project([cmu_slide])
    (root / "conf" / "local" / "catalog.yml").write_text(
        "slides:\n  type: pandas.ParquetDataset\n  filepath: data/02_intermediate/slides.parquet\n"
    )
    (root / "data" / "02_intermediate").mkdir()
    (root / "data" / "02_intermediate" / "slides.parquet").symlink_to("/dev/full")
    output = kedro_user_error(root, "--pipelines=tiling", "--params", "tiling.max_tiles=2")
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: Could not write data/02_intermediate/slides.parquet (dataset 'slides'): No space left on "
        "device; free space on that disk, or point the catalog's data folders at a larger one. Outputs of "
        "the nodes that finished are kept."
    ], output


def test_parameter_typo_stops_the_run_before_any_work(project, cmu_slide):
    root = project([cmu_slide])
    assert "tiling.tile_sise: unknown parameter" in kedro_user_error(root, "--params", "tiling.tile_sise=256")
    output = kedro_user_error(root, "--params", "tilling.max_tiles=4")  # a misspelt namespace
    assert "Unknown parameters 'tilling'" in output and "did you mean 'tiling'" in output
    assert not list((root / "data" / "02_intermediate").glob("slides.parquet/*"))


def test_segmentation_writes_the_cell_table(project, cmu_slide):
    root = project([cmu_slide])
    # The default pipeline: tiling, filtering, segmentation.
    kedro_run(root, **{"tiling.max_tiles": 3, "segmentation.export_label_masks": True})
    tiles, quality, cells = load(root, "tiles", "tile_quality", "cells")
    kept = set(quality.loc[quality["keep"], "tile_id"])
    assert len(cells) > 50 and cells["cell_id"].is_unique
    assert set(cells["tile_id"]) <= kept
    # Every cell's centroid lies in the core box of the tile that emitted it.
    merged = cells.merge(tiles, on=["tile_id", "slide_id"])
    assert ((merged.centroid_x >= merged.core_x0) & (merged.centroid_x < merged.core_x1)).all()
    assert ((merged.centroid_y >= merged.core_y0) & (merged.centroid_y < merged.core_y1)).all()
    assert cells["area_um2"].between(10, 400).all()  # segmentation.watershed.min_area_um2 / max_area_um2
    assert (cells["segmenter"] == "watershed").all()
    assert len(list((root / "data/03_primary/cells.parquet").glob("*/cells.parquet"))) == 1
    # Label masks: one 16-bit TIFF per kept tile, holding exactly that tile's cells.
    masks = sorted((root / "data/03_primary/label_masks").rglob("*.tif"))
    assert {m.stem for m in masks} == kept
    for path in masks:
        labels = tifffile.imread(path)
        assert labels.dtype == np.uint16
        assert len(np.unique(labels[labels > 0])) == int((cells["tile_id"] == path.stem).sum())


def _tiny_bench(folder: Path) -> Path:
    from .test_watershed import synthetic_he

    (folder / "images").mkdir(parents=True)
    (folder / "instances").mkdir()
    (folder / "info.json").write_text(json.dumps({"mpp": 0.25}))
    for name, centres in {
        "TCGA-B0-0001": [(20, 20), (60, 60)],
        "TCGA-21-0002": [(30, 70), (70, 30), (50, 50)],
    }.items():
        rgb, truth = synthetic_he(0.25, centres)
        Image.fromarray(rgb).save(folder / "images" / f"{name}.png")
        Image.fromarray(truth.astype(np.uint16)).save(folder / "instances" / f"{name}.png")
    return folder


def test_evaluation_scores_a_bench_set(project, tmp_path):
    root = project([])
    bench = _tiny_bench(tmp_path / "bench")
    kedro_run(root, "evaluation", **{"evaluation.bench_dir": str(bench)})
    scores, metrics = load(root, "segmentation_scores", "segmentation_metrics")
    assert sorted(scores["image_id"]) == ["TCGA-21-0002", "TCGA-B0-0001"]
    assert scores["n_true"].tolist() == [3, 2] or scores["n_true"].tolist() == [2, 3]
    assert metrics["mean"]["f1"] == 1.0 and metrics["mean"]["aji"] > 0.8
    assert set(metrics["per_organ"]) == {"kidney", "lung"}


def test_evaluation_without_bench_set_is_one_clear_message(project, tmp_path):
    root = project([])
    bench = f"evaluation.bench_dir={tmp_path / 'nothing'}"
    assert "not a bench set" in kedro_user_error(root, "--pipelines=evaluation", "--params", bench)


def test_segmentation_reports_a_lost_slide_and_goes_on(project, cmu_slide, tcga_slide):
    root = project([cmu_slide, tcga_slide])
    kedro_run(root, "tiling", **{"tiling.max_tiles": 2})
    (root / "data" / "01_raw" / "slides" / tcga_slide.name).unlink()  # gone since tiling
    records: list[logging.LogRecord] = []
    kedro_run(root, "segmentation", log=records)
    kedro_run(root, "filtering", log=records)
    cells, quality = load(root, "cells", "tile_quality")
    assert set(cells["slide_id"]) == {"cmu-1-small-region"}
    log = messages(records)
    assert "ERROR Slide tcga-cr-7395-01a-01-ts1: cannot be processed" in log
    # Its tiles are rejected with the reason; the other slide's are judged as usual.
    lost = quality[quality["slide_id"] == "tcga-cr-7395-01a-01-ts1"]
    assert len(lost) == 2 and not lost["keep"].any()
    assert lost["reason"].str.startswith("slide read error").all()
    assert quality.loc[quality["slide_id"] == "cmu-1-small-region", "keep"].any()
    sheets = {p.stem for p in (root / "data/08_reporting/tile_contact_sheet").glob("*.png")}
    assert sheets == {"cmu-1-small-region"}
    assert "ERROR Slide tcga-cr-7395-01a-01-ts1: no contact sheet" in log


def test_segmentation_failing_everywhere_writes_nothing(project, cmu_slide):
    root = project([cmu_slide])
    kedro_run(root, "tiling", **{"tiling.max_tiles": 2})
    (root / "data" / "01_raw" / "slides" / cmu_slide.name).unlink()
    output = kedro_user_error(root, "--pipelines=segmentation")
    assert "Segmentation failed on every slide (1); nothing was written" in output
    assert "cmu-1-small-region" in output
    assert not (root / "data" / "03_primary" / "cells.parquet").exists()
