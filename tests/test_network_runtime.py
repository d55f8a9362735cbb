"""The nuclei network without torch: the shipped ONNX export, onnxruntime, and the choice
between runtimes (``segmentation.watershed.runtime``)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from histocluster.errors import UserInputError
from histocluster.segmentation import network_runtime
from histocluster.segmentation.network_file import check_network
from histocluster.segmentation.network_runtime import (
    SHIPPED_CHECKPOINT,
    SHIPPED_ONNX,
    OnnxNucleiNetwork,
    choose_network,
    load_nuclei_network,
    predict_probabilities,
)

ROOT = Path(__file__).resolve().parents[1]
CMU_TILE = ((700, 1300), (256, 256))


def _sample_tile(cmu_slide) -> np.ndarray:
    from histocluster.wsi.slides import open_slide

    with open_slide(cmu_slide) as reader:
        return reader.read_region(CMU_TILE[0], 0, CMU_TILE[1])


def test_the_shipped_onnx_model_is_the_export_of_the_shipped_checkpoint():
    """A retrained checkpoint must be exported again (scripts/export_nuclei_net.py): the
    model names the checkpoint it came from."""
    import onnx

    model = onnx.load(str(SHIPPED_ONNX))
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["source_sha256"] == hashlib.sha256(SHIPPED_CHECKPOINT.read_bytes()).hexdigest()
    assert "monuseg" in metadata["trained_on"]


def test_onnxruntime_gives_the_torch_probabilities_on_a_real_tile(cmu_slide):
    rgb = _sample_tile(cmu_slide)
    in_onnx = predict_probabilities(load_nuclei_network(runtime="onnxruntime"), rgb, 0.5)
    in_torch = predict_probabilities(load_nuclei_network(runtime="torch", precision="float32"), rgb, 0.5)
    assert in_onnx.shape == in_torch.shape == (3, 256, 256)
    assert in_onnx[1:].sum(0).max() > 0.9  # the tile has nuclei
    np.testing.assert_allclose(in_onnx, in_torch, atol=1e-4)
    # Resampled input (a 0.25 µm/px view of the same pixels) goes through the same code.
    np.testing.assert_allclose(
        predict_probabilities(load_nuclei_network(runtime="onnxruntime"), rgb, 0.25),
        predict_probabilities(load_nuclei_network(runtime="torch", precision="float32"), rgb, 0.25),
        atol=1e-4,
    )


def test_auto_picks_torch_where_installed_and_onnxruntime_where_not(monkeypatch):
    monkeypatch.setattr(network_runtime, "torch_installed", lambda: True)
    assert choose_network().runtime == "torch" and choose_network().path == SHIPPED_CHECKPOINT
    monkeypatch.setattr(network_runtime, "torch_installed", lambda: False)
    choice = choose_network()
    assert (choice.runtime, choice.path, choice.bfloat16) == ("onnxruntime", SHIPPED_ONNX, False)
    # A file decides by its kind.
    assert choose_network(SHIPPED_ONNX, "auto").runtime == "onnxruntime"
    monkeypatch.setattr(network_runtime, "torch_installed", lambda: True)
    assert choose_network(SHIPPED_ONNX, "auto").runtime == "onnxruntime"


def test_the_wrong_runtime_for_a_file_or_a_missing_torch_says_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(UserInputError, match=r"nuclei_unet\.pt: a torch checkpoint .*export_nuclei_net\.py"):
        choose_network(SHIPPED_CHECKPOINT, "onnxruntime")
    with pytest.raises(UserInputError, match=r"nuclei_unet\.onnx: a ONNX model cannot run on .* torch"):
        choose_network(SHIPPED_ONNX, "torch")
    with pytest.raises(UserInputError, match="bfloat16 needs the torch runtime"):
        choose_network(None, "onnxruntime", "bfloat16")
    with pytest.raises(UserInputError, match=r"gone\.onnx: nuclei network weights not found"):
        choose_network(tmp_path / "gone.onnx")
    monkeypatch.setattr(network_runtime, "torch_installed", lambda: False)
    with pytest.raises(UserInputError, match=r"nuclei_unet\.pt: .*needs torch.*histocluster\[train\]"):
        choose_network(SHIPPED_CHECKPOINT)
    with pytest.raises(UserInputError, match="needs torch"):
        choose_network(None, "torch")


def test_a_broken_or_foreign_onnx_file_is_refused_naming_it(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    text = tmp_path / "text.onnx"
    text.write_bytes(b"not a model")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(SHIPPED_ONNX.read_bytes()[:50_000])
    for path in (text, truncated):
        with pytest.raises(UserInputError, match=rf"{path.name}: not an ONNX model"):
            check_network(path)
    # A valid model of something else: one input, but not the network's.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(UserInputError, match=r"foreign\.onnx: not a nuclei network model"):
        OnnxNucleiNetwork(foreign)


def test_without_torch_the_segmenter_runs_on_onnxruntime_and_never_imports_torch(cmu_slide, tmp_path):
    """As in the default install: torch cannot be imported; the watershed segmenter with
    the default settings picks the ONNX model and finds the nuclei torch finds."""
    code = f"""
import sys
sys.modules["torch"] = None  # as if not installed: importing it fails, find_spec finds nothing
import json, numpy as np
from histocluster.segmentation.network_file import check_network
from histocluster.segmentation.settings import WatershedSettings
from histocluster.segmentation.watershed import segment_nuclei
from histocluster.wsi.slides import open_slide
choice = check_network()
with open_slide({str(cmu_slide)!r}) as reader:
    rgb = reader.read_region({CMU_TILE[0]!r}, 0, {CMU_TILE[1]!r})
labels = segment_nuclei(rgb, 0.5, WatershedSettings())
np.save(sys.argv[1], labels)
print(json.dumps([choice.runtime, choice.path.name, sys.modules.get("torch") is None]))
"""
    out = tmp_path / "labels.npy"
    # Without PYTHONPATH: Kedro's bootstrap in earlier tests points it at project copies.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '["onnxruntime", "nuclei_unet.onnx", true]'
    from_onnx = np.load(out)
    from histocluster.segmentation.settings import WatershedSettings
    from histocluster.segmentation.watershed import segment_nuclei

    in_torch = segment_nuclei(_sample_tile(cmu_slide), 0.5, WatershedSettings(precision="float32"))
    assert from_onnx.max() >= 10  # a dense skin tile
    assert abs(int(from_onnx.max()) - int(in_torch.max())) <= 1
    assert ((from_onnx > 0) == (in_torch > 0)).mean() > 0.999


def test_export_writes_a_model_that_computes_the_checkpoints_function(tmp_path):
    """A randomly initialised network, saved as training saves it, exported: the ONNX
    model gives its probabilities; nothing else is left in the folder."""
    torch = pytest.importorskip("torch")
    from histocluster.segmentation.nuclei_net import NucleiUNet, TorchNucleiNetwork, export_onnx

    torch.manual_seed(1)
    network = NucleiUNet((4, 8, 8, 8))
    for module in network.modules():  # batch-norm statistics of a trained network
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    checkpoint = tmp_path / "random.pt"
    torch.save({"channels": [4, 8, 8, 8], "state_dict": network.state_dict(), "command": "test"}, checkpoint)
    out = export_onnx(checkpoint, tmp_path / "models" / "random.onnx")
    assert sorted(p.name for p in out.parent.iterdir()) == ["random.onnx"]
    rgb = np.random.default_rng(2).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        predict_probabilities(OnnxNucleiNetwork(out), rgb, 0.5),
        predict_probabilities(TorchNucleiNetwork(checkpoint), rgb, 0.5),
        atol=1e-5,
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_nuclei_net.py"), str(tmp_path / "nope.pt")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "nope.pt: nuclei network weights not found" in done.stderr


@pytest.mark.slow
def test_a_kedro_run_without_torch_segments_the_sample_slide_on_onnxruntime(project, cmu_slide, tmp_path):
    """The default install has no torch: a real `kedro run` of tiling, segmentation and
    filtering with torch, torchvision and cellpose unimportable (in the run's process and
    in the segmentation pass's workers) finds the sample slide's nuclei on onnxruntime."""
    from .conftest import env_without, load, run

    root = project([cmu_slide])
    env = env_without(tmp_path / "no_torch", "torch", "torchvision", "cellpose")
    result = run(
        ["kedro", "run", "--pipelines=prep", "--params",
         "tiling.max_tiles=8,segmentation.tiles_per_batch=2,segmentation.parallel.n_workers=2,"
         "segmentation.parallel.tiles_per_task=2"],
        cwd=root, env=env,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "Nuclei network: nuclei_unet.onnx on onnxruntime in float32" in output
    (cells,) = load(root, "cells")
    assert len(cells) > 300  # 8 tiles of dense skin (about 115 cells a tile with torch)


@pytest.mark.slow
def test_asking_for_torch_where_it_is_not_installed_stops_before_any_work(project, cmu_slide, tmp_path):
    """The message names the extra to install."""
    from .conftest import env_without, kedro_user_error

    root = project([cmu_slide])
    output = kedro_user_error(
        root,
        "--pipelines=prep",
        "--params",
        "segmentation.watershed.runtime=torch",
        env=env_without(tmp_path / "no_torch", "torch"),
    )
    assert "needs torch, which is not installed" in output
    assert "pip install 'histocluster[train]'" in output
    assert not (root / "data" / "02_intermediate" / "tiles.parquet").exists()
