"""Slide reading on the real slides and on made-up bad files."""

from __future__ import annotations

import numpy as np
import openslide
import pandas as pd
import pytest
from PIL import Image

from histocluster.wsi.slides import (
    DuplicateSlideIdError,
    ImageReader,
    OpenSlideReader,
    SlideReadError,
    SlideSource,
    best_level,
    describe_slide,
    discover_slides,
    open_slide,
    require_unique_ids,
    slugify,
    unique_slide_ids,
)


def test_aperio_svs_metadata(cmu_slide):
    with open_slide(cmu_slide) as reader:
        assert isinstance(reader, OpenSlideReader)
        assert reader.dimensions == (2220, 2967)
        assert reader.mpp == pytest.approx((0.499, 0.499))
        assert reader.objective_power == 20
        assert reader.level_count == 1


def test_region_is_the_slides_own_pixels(cmu_slide):
    """read_region returns exactly what OpenSlide returns at those level-0 coordinates."""
    with open_slide(cmu_slide) as reader:
        ours = reader.read_region((700, 1200), 0, (64, 48))
    direct = np.asarray(openslide.OpenSlide(str(cmu_slide)).read_region((700, 1200), 0, (64, 48)))
    assert ours.shape == (48, 64, 3)
    assert ours.dtype == np.uint8
    assert np.array_equal(ours, direct[..., :3])  # the slide is opaque there


def test_two_level_jpeg2000_slide_reads_the_coarser_level(tcga_slide):
    with open_slide(tcga_slide) as reader:
        assert reader.level_count == 2
        assert reader.mpp is None  # no µm/px in its metadata
        assert reader.best_level_for_downsample(4.0) == 1
        assert reader.best_level_for_downsample(1.9) == 0
        region = reader.read_scaled((1000, 1000, 800, 600), (200, 150))
    assert region.shape == (150, 200, 3)
    assert region.std() > 5  # tissue, not blank


def test_best_level_never_upsamples():
    assert best_level((1.0, 4.0, 16.0), 3.9) == 0
    assert best_level((1.0, 4.0, 16.0), 4.0) == 1
    assert best_level((1.0, 4.0, 16.0), 100) == 2
    assert best_level((1.0, 4.0, 16.0), 0.5) == 0


def test_plain_tiff_falls_back_to_image_reader(kidney_image):
    with pytest.raises(openslide.OpenSlideUnsupportedFormatError):
        openslide.OpenSlide(str(kidney_image))
    with open_slide(kidney_image) as reader:
        assert isinstance(reader, ImageReader)
        assert reader.dimensions == (1493, 901)
        assert reader.mpp is None  # its 1 dpi tag is not a scanning resolution
        direct = np.asarray(Image.open(kidney_image).convert("RGB"))
        assert np.array_equal(reader.read_region((100, 50), 0, (30, 20)), direct[50:70, 100:130])


def test_image_reader_pads_outside_with_white(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(path)
    with open_slide(path) as reader:
        region = reader.read_region((5, 5), 0, (10, 10))
    assert (region[:5, :5] == 0).all()
    assert (region[5:, :] == 255).all() and (region[:, 5:] == 255).all()


@pytest.mark.parametrize(
    ("unit", "xres", "expected"), [(3, 40_000.0, 0.25), (2, 50_800.0, 0.5), (2, 72.0, None)]
)
def test_image_reader_reads_plausible_tiff_resolution(tmp_path, unit, xres, expected):
    path = tmp_path / "scan.tif"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, tiffinfo={296: unit, 282: xres, 283: xres})
    with open_slide(path) as reader:
        if expected is None:
            assert reader.mpp is None
        else:
            assert reader.mpp == pytest.approx((expected, expected))


def test_thumbnail_blocks_match_one_read(tcga_slide):
    with open_slide(tcga_slide) as reader:
        whole = reader.thumbnail(8.0, max_read=8192).astype(int)
        blocked = reader.thumbnail(8.0, max_read=100).astype(int)  # 50-px blocks
    assert whole.shape == blocked.shape == (446, 555, 3)
    # Sub-pixel resampling differences only: a block misplaced by one thumbnail pixel
    # would differ by > 10 grey levels on this tissue.
    assert np.abs(whole - blocked).mean() < 3.0
    assert np.abs(np.roll(whole, 1, axis=1) - blocked).mean() > 10


def test_corrupt_slide_names_the_file(tmp_path):
    bad = tmp_path / "broken.svs"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 100)
    with pytest.raises(SlideReadError, match="broken.svs"):
        open_slide(bad)


def test_text_file_with_image_suffix_is_rejected(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(SlideReadError, match=r"notes\.png.*not a readable image"):
        open_slide(bad)


def test_dicom_folder_without_valid_instances_names_the_folder(tmp_path):
    folder = tmp_path / "case1"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(b"\x00" * 200)
    with pytest.raises(SlideReadError, match="case1: DICOM folder not readable"):
        open_slide(folder)
    (folder / "a.dcm").unlink()
    with pytest.raises(SlideReadError, match="without .dcm files"):
        open_slide(folder)


def test_missing_file(tmp_path):
    with pytest.raises(SlideReadError, match="no such file"):
        open_slide(tmp_path / "absent.svs")


def test_discover_gives_unique_stable_ids(tmp_path):
    for name in ("A slide.svs", "b.svs", "b.tif", "readme.txt", ".hidden.svs", "c.mrxs"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "c").mkdir()  # MIRAX data folder: not a slide of its own
    (tmp_path / "c" / "Data0000.dat").write_bytes(b"x")
    ids = {s.slide_id: s.path for s in discover_slides(tmp_path)}
    assert set(ids) == {"a-slide", "b-svs", "b-tif", "c"}
    assert ids["c"].endswith("c.mrxs")
    assert [s.slide_id for s in discover_slides(tmp_path)] == sorted(ids)


def test_slugify():
    assert slugify("TCGA-CR-7395-01A-01-TS1") == "tcga-cr-7395-01a-01-ts1"
    assert slugify("  weird name (1) ") == "weird-name-1"
    assert slugify("???") == "slide"
    assert slugify("测试") == "测试" and slugify("Übersicht Ａ1") == "übersicht-a1"  # letters of any script


def test_slide_ids_are_unique_readable_and_do_not_depend_on_order(tmp_path):
    names = ["测试.svs", "样本.svs", "CMU 1 Small Region.svs", "CMU-1-Small-Region.svs", "b.svs", "b.tif"]
    ids = unique_slide_ids(names)
    assert len(set(ids)) == len(ids), ids
    assert ids[:2] == ["测试", "样本"] and ids[4:] == ["b-svs", "b-tif"]
    assert all(i.startswith("cmu-1-small-region-svs-") for i in ids[2:4])
    assert dict(zip(names, ids, strict=True)) == dict(
        zip(names[::-1], unique_slide_ids(names[::-1]), strict=True)
    )
    for name in names:
        (tmp_path / name).write_bytes(b"")  # discovery goes by name only
    assert sorted(s.slide_id for s in discover_slides(tmp_path)) == sorted(ids)


def test_a_repeated_slide_id_stops_before_later_stages():
    table = pd.DataFrame({"slide_id": ["slide", "slide", "c"], "path": ["测试.svs", "样本.svs", "c.svs"]})
    with pytest.raises(DuplicateSlideIdError, match=r"repeated slide ids \(slide: 测试.svs, 样本.svs\)"):
        require_unique_ids(table)
    require_unique_ids(table.iloc[1:])  # unique: nothing said


def test_describe_uses_default_mpp_and_says_so(tcga_slide):
    with open_slide(tcga_slide) as reader:
        row = describe_slide(reader, SlideSource("t", str(tcga_slide)), default_mpp=0.25)
    assert (row["mpp_x"], row["mpp_y"], row["mpp_source"]) == (0.25, 0.25, "parameter")
    assert row["levels"] == 2 and row["status"] == "ok"


def test_a_long_thumbnail_read_shows_progress_naming_the_slide(tmp_path, capsys, caplog):
    import logging

    import tifffile

    # A single-level tiled TIFF (no pyramid level near the thumbnail's scale), 2048² px and
    # a few hundred kB: read in 1/8 with 128-px blocks it takes 256 blocks.
    yy, xx = np.mgrid[0:2048, 0:2048]
    pixels = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    path = tmp_path / "big single level.tif"
    tifffile.imwrite(path, pixels, tile=(256, 256), compression="zlib", photometric="rgb")
    with open_slide(path) as reader, caplog.at_level(logging.INFO):
        assert isinstance(reader, OpenSlideReader) and reader.level_count == 1
        thumb = reader.thumbnail(8, max_read=128)
    assert thumb.shape == (256, 256, 3)
    err = capsys.readouterr().err
    assert "Thumbnail of big single level.tif" in err and "/256 [" in err
    assert "reading the thumbnail (1/8) from level 0 (1/1) in 256 blocks" in caplog.text
    with open_slide(path) as reader:  # few blocks: no bar
        reader.thumbnail(8)
    assert "Thumbnail of" not in capsys.readouterr().err
