"""Tissue detection on synthetic images (known truth) and on the real slides."""

from __future__ import annotations

import numpy as np

from histocluster.wsi.settings import TissueSettings
from histocluster.wsi.slides import open_slide
from histocluster.wsi.tissue import detect_tissue

from .conftest import pink_tissue


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def test_finds_a_pink_disc_on_glass():
    image, disc = pink_tissue()
    mask = detect_tissue(image, mpp=4.0, settings=TissueSettings())
    assert iou(mask, disc) > 0.95


def test_bare_glass_has_no_tissue():
    rng = np.random.default_rng(1)
    glass = np.clip(240 + rng.normal(0, 3, (300, 300, 3)), 0, 255).astype(np.uint8)
    assert not detect_tissue(glass, mpp=4.0, settings=TissueSettings()).any()


def test_small_specks_are_removed_by_physical_size():
    image, _ = pink_tissue(radius=6)  # a 12 px speck at 4 µm/px ≈ 1,800 µm²
    assert not detect_tissue(image, 4.0, TissueSettings(min_object_um2=10_000)).any()
    assert detect_tissue(image, 4.0, TissueSettings(min_object_um2=100)).any()


def test_real_slides(cmu_slide, tcga_slide, kidney_image):
    """Fractions checked by eye on the thumbnails: CMU is a strip of skin over about a
    third of the region, the TCGA section fills most of its slide, the kidney IHC image
    is blank glass with one speck of debris."""
    fractions = {}
    for path in (cmu_slide, tcga_slide, kidney_image):
        with open_slide(path) as reader:
            mpp = reader.mpp[0] if reader.mpp else 0.5
            thumb = reader.thumbnail(8.0 / mpp)
        fractions[path.name] = detect_tissue(thumb, 8.0, TissueSettings()).mean()
    assert 0.25 < fractions[cmu_slide.name] < 0.5
    assert 0.5 < fractions[tcga_slide.name] < 0.75
    assert fractions[kidney_image.name] < 0.01


def test_marking_ink_does_not_lift_the_threshold_over_a_region_that_is_all_tissue():
    """An exported region with no glass: pale pink tissue (saturation 0.35) and a patch of
    blue marking ink (0.9). Otsu alone splits ink from tissue and calls the tissue glass;
    the ceiling keeps the tissue."""
    image = np.empty((64, 64, 3), np.uint8)
    image[:] = (230, 150, 200)
    image[:20, :20] = (20, 60, 200)
    mask = detect_tissue(image, 4.0, TissueSettings())
    assert mask[25:, 25:].all() and mask.mean() > 0.9
    unbounded = TissueSettings(max_saturation=1.0, max_optical_density=10.0)
    assert not detect_tissue(image, 4.0, unbounded)[25:, 25:].any()  # what the ceiling prevents


def test_a_small_image_keeps_a_piece_of_tissue_a_whole_slide_would_drop():
    """A 16 × 16 px piece at 4 µm/px is 4,096 µm², under min_object_um2 (10,000): dropped on
    a 400² px thumbnail (1.6 mm across), kept on a 64² px one (a 256 µm region), where it
    is 6 % of the image (min_object_fraction 2 %)."""
    for side, kept in ((64, True), (400, False)):
        image = np.full((side, side, 3), 240, np.uint8)
        image[10:26, 10:26] = (200, 90, 160)
        assert detect_tissue(image, 4.0, TissueSettings())[10:26, 10:26].all() == kept, side
