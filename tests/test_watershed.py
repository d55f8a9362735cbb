"""The watershed nuclei segmenter (network and threshold foregrounds) on synthetic H&E images."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hed2rgb

from histocluster.segmentation.metrics import score
from histocluster.segmentation.settings import WatershedSettings
from histocluster.segmentation.watershed import segment_nuclei
from histocluster.wsi.stain import haematoxylin


def synthetic_he(mpp: float, centres_um, radius_um: float = 3.5, size_um: float = 100.0, seed: int = 0):
    """Pink eosin background with haematoxylin discs; returns (rgb, true labels)."""
    rng = np.random.default_rng(seed)
    n = int(round(size_um / mpp))
    yy, xx = (np.mgrid[:n, :n] + 0.5) * mpp
    hed = np.zeros((n, n, 3))
    hed[..., 1] = 0.25 + rng.normal(0, 0.02, (n, n))  # eosin everywhere
    truth = np.zeros((n, n), np.int32)
    for index, (cy, cx) in enumerate(centres_um, start=1):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius_um**2
        hed[disc, 0] = 0.9 + rng.normal(0, 0.03, int(disc.sum()))
        truth[disc & (truth == 0)] = index
    rgb = (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    return rgb, truth


CENTRES = [(20, 20), (20, 60), (50, 35), (80, 80), (75, 20), (45, 80)]


FOREGROUNDS = ["network", "threshold"]


@pytest.mark.parametrize("foreground", FOREGROUNDS)
@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_separate_nuclei_found_at_both_resolutions(mpp, foreground):
    rgb, truth = synthetic_he(mpp, CENTRES)
    labels = segment_nuclei(rgb, mpp, WatershedSettings(foreground=foreground))
    assert labels.shape == truth.shape and labels.dtype == np.int32
    s = score(truth, labels)
    assert s.n_pred == len(CENTRES)
    assert s.f1 == 1.0 and s.aji > 0.8


@pytest.mark.parametrize("foreground", FOREGROUNDS)
def test_touching_nuclei_are_split(foreground):
    rgb, truth = synthetic_he(0.25, [(50, 45), (50, 51)])  # 6 µm apart, radius 3.5: overlapping
    labels = segment_nuclei(rgb, 0.25, WatershedSettings(foreground=foreground))
    found = np.unique(labels[labels > 0])
    assert len(found) == 2
    # A split, not a slice: each object lies (≥ 90 %) in its own true nucleus. (The network's
    # objects are smaller than these flat synthetic discs, so IoU is checked on separate discs.)
    owners = set()
    for label in found:
        inside = truth[labels == label]
        owner = np.bincount(inside).argmax()
        assert owner > 0 and (inside == owner).mean() >= 0.9
        owners.add(owner)
    assert owners == {1, 2}


@pytest.mark.parametrize("foreground", FOREGROUNDS)
def test_blank_tissue_has_no_nuclei(foreground):
    rgb, _ = synthetic_he(0.5, [])
    assert segment_nuclei(rgb, 0.5, WatershedSettings(foreground=foreground)).max() == 0


def test_network_is_the_default_foreground():
    assert WatershedSettings().foreground == "network"


def test_haematoxylin_is_high_in_nuclei_only():
    rgb, truth = synthetic_he(0.5, CENTRES)
    h = haematoxylin(rgb)
    assert h[truth > 0].mean() > 3 * h[truth == 0].mean()


def test_settings_are_validated():
    with pytest.raises(ValueError):
        WatershedSettings(min_distance_um=-1)
    with pytest.raises(ValueError):
        WatershedSettings(min_distnce_um=2)  # typo


def test_fill_small_holes_fills_exactly_the_small_enclosed_background():
    """The same as filling holes with scipy then keeping the small ones, on random masks."""
    from scipy import ndimage as ndi

    from histocluster.segmentation.watershed import fill_small_holes

    rng = np.random.default_rng(0)
    for k in range(20):
        mask = ndi.binary_opening(rng.random((80, 90)) < 0.55 + 0.01 * k)
        holes = ndi.binary_fill_holes(mask) & ~mask
        labels, _ = ndi.label(holes)
        sizes = np.bincount(labels.ravel())
        small = sizes <= 6
        small[0] = False
        expected = mask | small[labels]
        assert np.array_equal(fill_small_holes(mask, 6), expected)
        assert holes.any() or k > 15  # the masks do have holes to fill


def test_drop_unsure_removes_exactly_the_objects_with_a_low_mean_probability():
    """Three objects: sure everywhere, sure in the middle with an unsure rim (a nucleus:
    mean 0.81, kept at 0.7), and middling everywhere (keratin: mean 0.6, dropped)."""
    from histocluster.segmentation.watershed import drop_unsure

    labels = np.zeros((20, 60), dtype=np.int32)
    labels[5:15, 2:12], labels[5:15, 22:32], labels[5:15, 42:52] = 1, 2, 3
    probability = np.full(labels.shape, 0.05, dtype=np.float32)
    probability[labels == 1] = 0.95
    probability[labels == 2] = 0.55  # rim (36 px) …
    probability[6:14, 23:31] = 0.95  # … around a sure middle (64 px)
    probability[labels == 3] = 0.6
    assert np.isclose(probability[labels == 2].mean(), (36 * 0.55 + 64 * 0.95) / 100)
    kept = drop_unsure(labels.copy(), probability, 0.7)
    assert set(np.unique(kept)) == {0, 1, 2}
    assert np.array_equal(kept == 2, labels == 2)  # kept whole, not trimmed
    assert set(np.unique(drop_unsure(labels.copy(), probability, 0.85))) == {0, 1}


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.0, 7.0])
def test_opencv_gaussian_matches_scipy(sigma):
    """The segmenter's smoothing (OpenCV, for speed) gives scipy.ndimage's values, also
    on an image smaller than the kernel (mirrored more than once)."""
    from scipy import ndimage as ndi

    from histocluster.segmentation.watershed import gaussian

    rng = np.random.default_rng(0)
    for shape in [(64, 80), (5, 9)]:
        image = rng.random(shape).astype(np.float32)
        np.testing.assert_allclose(gaussian(image, sigma), ndi.gaussian_filter(image, sigma), atol=1e-5)


def test_distance_to_background_is_the_exact_euclidean_distance():
    from scipy import ndimage as ndi

    from histocluster.segmentation.watershed import distance_to_background

    rng = np.random.default_rng(0)
    mask = ndi.binary_opening(rng.random((120, 90)) > 0.4, iterations=2)
    np.testing.assert_allclose(distance_to_background(mask), ndi.distance_transform_edt(mask), atol=1e-5)
    # No background at all: distance to just beyond the image border, not a huge number.
    full = distance_to_background(np.ones((5, 7), bool))
    assert full[0, 0] == 1 and full[2, 3] == 3 and full.max() == 3


def test_markers_match_scipy_filters():
    """Markers from OpenCV's maximum/minimum filters are scipy's (mirrored border)."""
    from scipy import ndimage as ndi

    from histocluster.segmentation.watershed import markers

    rng = np.random.default_rng(1)
    distance = ndi.gaussian_filter(rng.random((80, 100)), 2).astype(np.float32) * 10
    mask = distance > 4.9
    s = WatershedSettings()
    size = max(3, int(round(2 * s.min_distance_um / 0.5)) | 1)
    peaks = (distance == ndi.maximum_filter(distance, size=size)) & mask
    peaks &= distance - ndi.minimum_filter(distance, size=size) >= s.marker_h_um / 0.5
    expected, n = ndi.label(peaks, structure=np.ones((3, 3)))
    got = markers(distance, mask, 0.5, s)
    assert n >= 3
    np.testing.assert_array_equal(got, expected)


def test_opencv_labelling_is_scipys():
    """Components by OpenCV (4- and 8-connected) are numbered exactly as scipy numbers them."""
    from scipy import ndimage as ndi

    from histocluster.segmentation.watershed import label

    mask = ndi.binary_opening(np.random.default_rng(2).random((200, 150)) > 0.45)
    for connectivity, structure in [(4, None), (8, np.ones((3, 3)))]:
        expected, n = ndi.label(mask, structure=structure)
        got, count = label(mask, connectivity)
        assert count == n > 50
        np.testing.assert_array_equal(got, expected)
