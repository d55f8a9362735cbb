"""The ``resnet50`` embedder through its real code path, with randomly initialised weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from histocluster.features.cell_pixels import iter_tile_cells
from histocluster.features.resnet import (
    FEATURES,
    WEIGHT_FILES,
    ResNetEmbedder,
    ResNetSettings,
    WeightsError,
    cell_crops,
    resolve_weights,
)

from .test_embedding import _tables, two_cells


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
    return _tables(path, labels, rgb)


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
    slides, tiles, cells = slide
    (item,) = list(iter_tile_cells(slides, tiles, cells, margin=20))
    crops = cell_crops(item, crop_px=12, size=24, mask_background=False)
    assert crops.shape == (2, 24, 24, 3)
    assert tuple(crops[1, 12, 12]) == (0, 255, 0)  # the mark is at the centre
    assert tuple(crops[0, 12, 12]) != (0, 255, 0)
    masked = cell_crops(item, crop_px=40, size=40, mask_background=True)
    assert tuple(masked[0, 1, 1]) == (123, 116, 103)  # outside the cell: ImageNet mean
    assert tuple(masked[0, 20, 20]) == tuple(item.rgb[int(item.centres[0][1]), int(item.centres[0][0])])


def test_resnet_embeds_every_cell_on_cpu(slide, random_weights):
    slides, tiles, cells = slide
    settings = ResNetSettings(
        weights_path=str(random_weights), device="cpu", crop_um=12, input_size=64, batch_size=1
    )
    embedder = ResNetEmbedder(settings)
    out = np.full((len(cells), FEATURES), np.nan, dtype=np.float32)
    done = embedder.embed(slides, tiles, cells, out)
    assert done.all() and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])  # different cells, different features
    # Batching does not change the result.
    again = np.empty_like(out)
    ResNetEmbedder(ResNetSettings(**{**settings.__dict__, "batch_size": 8})).embed(
        slides, tiles, cells, again
    )
    assert np.allclose(out, again, atol=1e-4)
    # An unreadable slide: its cells are reported as not done, nothing raised.
    lost = slides.assign(path=str(slides.loc[0, "path"]) + ".gone")
    assert not embedder.embed(lost, tiles, cells, np.empty_like(out)).any()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bfloat16_on_gpu_matches_cpu(slide, random_weights):
    slides, tiles, cells = slide
    base = dict(weights_path=str(random_weights), crop_um=12, input_size=224)
    cpu, gpu = (np.empty((len(cells), FEATURES), np.float32) for _ in range(2))
    ResNetEmbedder(ResNetSettings(**base, device="cpu")).embed(slides, tiles, cells, cpu)
    ResNetEmbedder(ResNetSettings(**base, device="cuda", mixed_precision=True)).embed(
        slides, tiles, cells, gpu
    )
    cosine = (cpu * gpu).sum(1) / np.linalg.norm(cpu, axis=1) / np.linalg.norm(gpu, axis=1)
    assert (cosine > 0.99).all()


def test_cells_table_is_untouched(slide, random_weights):
    slides, tiles, cells = slide
    before = cells.copy()
    ResNetEmbedder(ResNetSettings(weights_path=str(random_weights), device="cpu", input_size=32)).embed(
        slides, tiles, cells, np.empty((len(cells), FEATURES), np.float32)
    )
    pd.testing.assert_frame_equal(cells, before)
