"""Cellpose-SAM through the real cellpose 4 code path, with a checkpoint the test makes.

The checkpoint holds Cellpose-SAM's readout weights only (0.35 MB): cellpose builds the
ViT-L network with random weights and loads checkpoints with ``strict=False``, so the
network stays randomly initialised, and no 1.2 GB file is written. Speed is that of the
real model; the masks are meaningless, so the tests check the plumbing, not the cells.
"""

from __future__ import annotations

import numpy as np
import pytest

from histocluster.errors import UserInputError
from histocluster.segmentation.cellpose import (
    CellposeSegmenter,
    CellposeSettings,
    CheckpointError,
    resolve_checkpoint,
)

from .conftest import env_without, kedro_user_error, venv_env

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    from cellpose.vit import CPSAM

    torch.manual_seed(0)
    network = CPSAM()
    path = tmp_path_factory.mktemp("cellpose") / "cpsam_random.pt"
    torch.save({k: v for k, v in network.state_dict().items() if not k.startswith("encoder.")}, path)
    return path


@pytest.mark.slow
def test_real_code_path_on_cpu(random_checkpoint):
    segmenter = CellposeSegmenter(CellposeSettings(pretrained_model=str(random_checkpoint), gpu=False))
    rng = np.random.default_rng(0)
    tiles = [(rng.random((128, 128, 3)) * 255).astype(np.uint8) for _ in range(2)]
    labels = segmenter.segment(tiles, mpp=0.5)
    assert len(labels) == 2
    assert all(label.shape == (128, 128) and label.dtype == np.int32 for label in labels)
    assert all(label.min() >= 0 for label in labels)


def test_missing_named_model_says_which_file_where(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path / "models"))
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(CellposeSettings(pretrained_model="cpsam", allow_download=False))
    message = str(info.value)
    assert str(tmp_path / "models" / "cpsam") in message
    assert "CELLPOSE_LOCAL_MODELS_PATH" in message and "pretrained_model" in message
    assert isinstance(info.value, UserInputError)


def test_missing_path_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pt does not exist"):
        resolve_checkpoint(CellposeSettings(pretrained_model=str(tmp_path / "nowhere.pt")))


def test_named_model_found_in_the_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    (tmp_path / "cpsam").write_bytes(b"weights")
    assert resolve_checkpoint(CellposeSettings(pretrained_model="cpsam")) == tmp_path / "cpsam"


@pytest.mark.slow
def test_missing_checkpoint_stops_the_run_before_any_work(project, cmu_slide, tmp_path):
    root = project([cmu_slide])
    env_models = tmp_path / "no-models"
    env = venv_env() | {"CELLPOSE_LOCAL_MODELS_PATH": str(env_models)}
    output = kedro_user_error(
        root,
        "--params",
        "segmentation.segmenter=cellpose,segmentation.cellpose.allow_download=false",
        env=env,
    )
    assert f"Cellpose model 'cpsam' is not at {env_models / 'cpsam'}" in output
    assert not (root / "data" / "02_intermediate" / "slides.parquet").exists()  # tiling never ran


@pytest.mark.slow
def test_cellpose_without_the_gpu_extra_says_what_to_install(project, cmu_slide, tmp_path):
    """The default install has no cellpose and no torch: asking for Cellpose-SAM (conf/gpu)
    stops before any work and names the extra, not a failed download."""
    root = project([cmu_slide])
    env = env_without(tmp_path / "default_install", "torch", "cellpose")
    output = kedro_user_error(root, "--params", "segmentation.segmenter=cellpose", env=env)
    assert "segmentation.segmenter cellpose needs cellpose and torch" in output
    assert "pip install -e '.[gpu]'" in output and "download" not in output
    assert not (root / "data" / "02_intermediate" / "slides.parquet").exists()  # tiling never ran


@pytest.mark.slow
def test_missing_network_weights_stop_the_run_before_any_work(project, cmu_slide, tmp_path):
    root = project([cmu_slide])
    output = kedro_user_error(root, "--params", f"segmentation.watershed.weights_path={tmp_path / 'gone.pt'}")
    assert f"{tmp_path / 'gone.pt'}: nuclei network weights not found" in output
    assert not (root / "data" / "02_intermediate" / "slides.parquet").exists()  # tiling never ran


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bfloat16_batch_on_gpu(random_checkpoint):
    segmenter = CellposeSegmenter(CellposeSettings(pretrained_model=str(random_checkpoint), gpu=True))
    assert segmenter.model.net.dtype == torch.bfloat16
    tiles = [np.full((512, 512, 3), 200, np.uint8) for _ in range(4)]
    labels = segmenter.segment(tiles, mpp=0.5)
    assert [label.shape for label in labels] == [(512, 512)] * 4
