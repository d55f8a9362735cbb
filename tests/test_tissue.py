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
