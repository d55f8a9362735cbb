"""The segmentation pass: each tile is decoded once, and quality, cells, measurements and
pixel features all come from that one read."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histocluster.features.settings import CellFeatureSettings
from histocluster.features.texture import PIXEL_COLUMNS, pixel_features
from histocluster.segmentation.measurements import CELL_COLUMNS
from histocluster.segmentation.tile_pass import (
    QUALITY_COLUMNS,
    SegmentationFailedError,
    process_slide,
    segment_slides,
)
from histocluster.wsi import slides as slide_readers
from histocluster.wsi.settings import QualityThresholds

from .conftest import KnownLabels, one_tile, pass_settings


@pytest.fixture
def count_reads(monkeypatch):
    """Counts every region read from any slide (OpenSlide or plain image)."""
    reads = []
    for cls in (slide_readers.OpenSlideReader, slide_readers.ImageReader):
        original = cls.read_region

        def counted(reader, location, level, size, _original=original):
            reads.append((location, level, size))
            return _original(reader, location, level, size)

        monkeypatch.setattr(cls, "read_region", counted)
    return reads


def test_one_read_gives_the_cells_their_measurements_and_their_pixel_features(image_slide, count_reads):
    slide, labels, rgb = image_slide
    tiles = pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])])
    result = process_slide(slide, tiles, KnownLabels(labels), pass_settings(export_label_masks=True))
    assert len(count_reads) == 1  # the tile is decoded once, for everything
    cells = result.cells
    assert list(cells.columns) == CELL_COLUMNS + PIXEL_COLUMNS and len(cells) == 2
    # Pixel features are those of the segmenter's own label map and the tile's pixels.
    direct = pixel_features(labels, rgb, 0.5, 2.0).set_index("label")[PIXEL_COLUMNS]
    assert np.allclose(cells[PIXEL_COLUMNS].to_numpy(), direct.to_numpy())
    # The score is the segmenter's confidence over the cell, not a stain measurement.
    assert np.allclose(cells["score"], 0.75) and not np.allclose(cells["score"], cells["hematoxylin_mean"])
    assert result.quality["reason"].tolist() == ["filtering disabled"]
    (mask,) = result.masks.values()
    assert np.array_equal(mask(), labels)


def test_quality_is_judged_on_the_same_read_and_rejected_tiles_are_not_segmented(image_slide, count_reads):
    slide, labels, rgb = image_slide
    tiles = pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])])
    segmenter = KnownLabels(labels)
    strict = QualityThresholds(min_edge_density=0.99)  # nothing passes
    result = process_slide(slide, tiles, segmenter, pass_settings(quality=strict))
    assert len(count_reads) == 1 and segmenter.calls == 0
    assert list(result.quality.columns) == QUALITY_COLUMNS
    (row,) = result.quality.to_dict("records")
    assert not row["keep"] and row["reason"].startswith("edge_density")
    assert result.cells.empty and list(result.previews) == [tiles.tile_id[0]]  # a preview for the sheet


def test_texture_off_leaves_the_columns_out(image_slide):
    slide, labels, rgb = image_slide
    tiles = pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])])
    result = process_slide(
        slide, tiles, KnownLabels(labels), pass_settings(features=CellFeatureSettings(texture=False))
    )
    assert list(result.cells.columns) == CELL_COLUMNS


def test_an_unreadable_slide_is_rejected_tile_by_tile_and_a_run_of_only_such_slides_stops(image_slide):
    slide, labels, rgb = image_slide
    good = pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])])
    gone = pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0], slide_id="gone")])
    slides = pd.DataFrame(
        [slide, {"slide_id": "gone", "path": slide["path"] + ".missing", "width": 120, "height": 60}]
    )
    out = segment_slides(slides, pd.concat([good, gone]), KnownLabels(labels), pass_settings())
    assert len(out.cells) == 2 and set(out.cells["slide_id"]) == {"two"}
    lost = out.quality[out.quality["slide_id"] == "gone"]
    assert not lost["keep"].any() and lost["reason"].str.startswith("slide read error").all()
    with pytest.raises(SegmentationFailedError, match="gone"):
        segment_slides(slides.iloc[1:], gone, KnownLabels(labels), pass_settings())


def test_an_unreadable_tile_does_not_count_as_a_kept_tile_that_failed(image_slide, monkeypatch):
    """One tile of the slide cannot be read, the other is kept and segmented: the slide
    gave cells, and it is not reported as a slide whose kept tiles all failed."""
    from histocluster.segmentation import tile_pass

    slide, labels, rgb = image_slide
    good = one_tile(rgb.shape[1], rgb.shape[0])
    bad = {**good, "tile_id": "two_unreadable"}
    original = tile_pass.read_tile

    def read(reader, tile):
        if tile["tile_id"] == "two_unreadable":
            raise OSError("bad JPEG block")
        return original(reader, tile)

    monkeypatch.setattr(tile_pass, "read_tile", read)
    slides = pd.DataFrame([slide])
    out = segment_slides(slides, pd.DataFrame([bad, good]), KnownLabels(labels), pass_settings())
    assert len(out.cells) == 2
    quality = out.quality.set_index("tile_id")
    assert quality.loc["two_unreadable", "reason"].startswith("read error: OSError")
    assert bool(quality.loc["two_t", "keep"])


def test_a_greyscale_slide_is_warned_about_naming_the_check(tmp_path, cmu_slide, caplog):
    """Real tissue, scanned (or converted) without colour: every tile fails the colour
    check, and the slide's 0 cells come with a WARNING naming it, not an INFO line."""
    import logging

    with slide_readers.open_slide(cmu_slide) as reader:
        rgb = reader.read_region((600, 1200), 0, (512, 512))
    grey = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=-1)
    path = tmp_path / "grey.png"
    Image.fromarray(grey).save(path)
    slide = {"slide_id": "grey", "path": str(path), "width": 512, "height": 512}
    # A colour slide beside it gives cells, so the run goes on and the warning is all there is.
    colour = {"slide_id": "colour", "path": str(tmp_path / "colour.png"), "width": 512, "height": 512}
    Image.fromarray(rgb).save(colour["path"])
    tiles = pd.DataFrame([one_tile(512, 512, slide_id="grey"), one_tile(512, 512, slide_id="colour")])
    labels = np.zeros((512, 512), int)
    labels[100:120, 100:120] = 1
    with caplog.at_level(logging.INFO):
        out = segment_slides(
            pd.DataFrame([slide, colour]),
            tiles,
            KnownLabels(labels),
            pass_settings(quality=QualityThresholds()),
        )
    assert set(out.cells["slide_id"]) == {"colour"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "Slide grey: every one of its 1 tiles was rejected" in w and "color_variance" in w for w in warnings
    ), warnings
