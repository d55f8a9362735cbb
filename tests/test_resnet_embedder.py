"""The ``resnet50`` embedder through its real code path (the segmentation pass, which
holds the tile read with a margin), with randomly initialised weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from histocluster.features.resnet import (
    FEATURES,
    WEIGHT_FILES,
    ResNetEmbedder,
    WeightsError,
    cell_crops,
    resolve_weights,
)
from histocluster.features.settings import CellFeatureSettings, ResNetSettings
from histocluster.segmentation.tile_pass import process_slide

from .conftest import KnownLabels, one_tile, pass_settings, two_cells


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random-resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


@pytest.fixture
def slide(tmp_path):
    labels, rgb = two_cells()
    rgb[28:33, 88:93] = (0, 255, 0)  # a green mark at the second cell's centre
    path = tmp_path / "two.png"
    Image.fromarray(rgb).save(path)
    record = {"slide_id": "two", "path": str(path), "width": rgb.shape[1], "height": rgb.shape[0]}
    return record, pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])]), labels


def run_pass(slide, deep, crop_um: float = 12.0):
    """The pass over the slide with ResNet features asked for (``deep`` gets each tile)."""
    record, tiles, labels = slide
    features = CellFeatureSettings(deep="resnet50", resnet50=ResNetSettings(crop_um=crop_um))
    return process_slide(record, tiles, KnownLabels(labels), pass_settings(features=features), deep)


def tile_items(slide, crop_um: float = 12.0) -> list:
    items = []
    run_pass(
        slide, lambda item: items.append(item) or np.zeros((len(item.rows), FEATURES), np.float32), crop_um
    )
    return items


def test_missing_weights_say_which_file_goes_where(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="nowhere.pth"):
        resolve_weights(ResNetSettings(weights_path=str(tmp_path / "nowhere.pth")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as error:
        resolve_weights(ResNetSettings(allow_download=False))
    message = str(error.value)
    assert WEIGHT_FILES[0] in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    # A file in torch's cache is found there.
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / WEIGHT_FILES[0]).write_bytes(b"")
    assert resolve_weights(ResNetSettings(allow_download=False)) == cache / WEIGHT_FILES[0]


def test_not_a_state_dict_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a ResNet-50 state dict"):
        ResNetEmbedder(ResNetSettings(weights_path=str(bad), device="cpu"))


def test_crops_are_centred_on_the_cell_and_of_physical_size(slide):
    (item,) = tile_items(slide, crop_um=20.0)  # read with a margin of at least half a crop
    crops = cell_crops(item, crop_px=12, size=24, mask_background=False)
    assert crops.shape == (2, 24, 24, 3)
    assert tuple(crops[1, 12, 12]) == (0, 255, 0)  # the mark is at the centre
    assert tuple(crops[0, 12, 12]) != (0, 255, 0)
    masked = cell_crops(item, crop_px=40, size=40, mask_background=True)
    assert tuple(masked[0, 1, 1]) == (123, 116, 103)  # outside the cell: ImageNet mean
    assert tuple(masked[0, 20, 20]) == tuple(item.rgb[int(item.centres[0][1]), int(item.centres[0][0])])
    # The first cell sits 30 px from the top: a 40 px crop reaches past the slide's edge, into white.
    assert item.rgb.shape[0] > 60 and (item.rgb[:5] == 255).all()


def test_resnet_embeds_every_cell_in_the_pass_on_cpu(slide, random_weights):
    settings = ResNetSettings(
        weights_path=str(random_weights), device="cpu", crop_um=12, input_size=64, batch_size=1
    )
    result = run_pass(slide, ResNetEmbedder(settings).tile_features)
    (ids,), (matrix,) = result.deep_ids, result.deep_rows
    assert list(ids) == list(result.cells["cell_id"]) and matrix.shape == (2, FEATURES)
    assert np.isfinite(matrix).all() and not np.allclose(matrix[0], matrix[1])  # different cells differ
    # Batching does not change the result.
    again = run_pass(
        slide, ResNetEmbedder(ResNetSettings(**{**settings.__dict__, "batch_size": 8})).tile_features
    )
    assert np.allclose(matrix, again.deep_rows[0], atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bfloat16_on_gpu_matches_cpu(slide, random_weights):
    base = dict(weights_path=str(random_weights), crop_um=12, input_size=224)
    cpu = run_pass(slide, ResNetEmbedder(ResNetSettings(**base, device="cpu")).tile_features).deep_rows[0]
    gpu = run_pass(
        slide, ResNetEmbedder(ResNetSettings(**base, device="cuda", mixed_precision=True)).tile_features
    ).deep_rows[0]
    cosine = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert (cosine > 0.99).all()
