"""The ``typenet`` embedder (the cell-type network shipped with the package) through its
real code path: the segmentation pass, which holds the tile read with a margin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from histocluster.features.settings import CellFeatureSettings, TypeNetSettings
from histocluster.features.type_net import (
    CROP,
    FEATURES,
    SHIPPED_WEIGHTS,
    WIDTH,
    TypeNetEmbedder,
    TypeNetWeightsError,
    crop_features,
    load_type_net,
)
from histocluster.segmentation.tile_pass import crop_margin, process_slide

from .conftest import KnownLabels, one_tile, pass_settings, two_cells


@pytest.fixture
def slide(tmp_path):
    labels, rgb = two_cells()
    path = tmp_path / "two.png"
    Image.fromarray(rgb).save(path)
    record = {"slide_id": "two", "path": str(path), "width": rgb.shape[1], "height": rgb.shape[0]}
    return record, pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])]), labels


def run_pass(slide, settings: TypeNetSettings):
    record, tiles, labels = slide
    features = CellFeatureSettings(deep="typenet", typenet=settings)
    deep = TypeNetEmbedder(settings).tile_features
    return process_slide(record, tiles, KnownLabels(labels), pass_settings(features=features), deep)


def test_shipped_weights_are_in_the_package_and_name_four_types():
    net, classes = load_type_net()
    assert SHIPPED_WEIGHTS.is_file() and SHIPPED_WEIGHTS.stat().st_size < 2_000_000
    assert classes == ["epithelial", "fibroblast", "inflammatory", "others"]
    assert not net.training


def test_type_network_embeds_every_cell_in_the_pass(slide):
    settings = TypeNetSettings(rotations=1, batch_size=1)
    result = run_pass(slide, settings)
    (ids,), (matrix,) = result.deep_ids, result.deep_rows
    assert list(ids) == list(result.cells["cell_id"]) and matrix.shape == (2, FEATURES)
    assert np.isfinite(matrix).all() and not np.allclose(matrix[0], matrix[1])  # different cells differ
    # The last columns are log-probabilities of the four types: each cell's sum to one.
    assert np.allclose(np.exp(matrix[:, WIDTH:]).sum(1), 1, atol=1e-4)
    again = run_pass(slide, TypeNetSettings(rotations=1, batch_size=8))  # batching changes nothing
    assert np.allclose(matrix, again.deep_rows[0], atol=1e-4)


def test_the_pass_reads_a_margin_for_the_whole_20_um_crop():
    tiles = pd.DataFrame([one_tile(100, 100)])  # 0.5 µm/px
    assert crop_margin(tiles, CellFeatureSettings(deep="typenet")) == CROP // 2 + 1
    assert crop_margin(tiles, CellFeatureSettings(deep="none")) == 0


def test_features_do_not_change_when_the_cell_is_turned():
    rng = np.random.default_rng(0)
    crop = rng.integers(150, 230, (1, CROP, CROP, 3), dtype=np.uint8)
    crop[0, 14:26, 12:22] = (70, 40, 120)  # an elongated dark nucleus, off the centre line
    crop[0, 2:10, 30:38] = (120, 60, 140)  # and a neighbour in one corner
    turned = np.rot90(crop, 1, axes=(1, 2)).copy()
    net, _ = load_type_net()
    averaged = crop_features(net, np.concatenate([crop, turned]), rotations=8)
    assert np.allclose(averaged[0], averaged[1], atol=1e-4)
    single = crop_features(net, np.concatenate([crop, turned]), rotations=1)
    assert not np.allclose(single[0], single[1], atol=1e-3)  # one view alone does depend on it


def test_without_torch_the_error_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(TypeNetWeightsError, match=r"not installed: pip install 'histocluster\[train\]'"):
        TypeNetEmbedder(TypeNetSettings())


def test_missing_or_foreign_weights_are_a_clear_error(tmp_path):
    with pytest.raises(TypeNetWeightsError, match="nowhere.pt"):
        TypeNetEmbedder(TypeNetSettings(weights_path=str(tmp_path / "nowhere.pt")))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TypeNetWeightsError, match="not a type-network checkpoint"):
        TypeNetEmbedder(TypeNetSettings(weights_path=str(bad)))
