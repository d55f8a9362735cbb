"""The nuclei U-Net behind the watershed's default foreground: loading, shapes, training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.segmentation.evaluation import evaluate, evaluate_points
from histocluster.segmentation.network_file import DEFAULT_WEIGHTS, check_network_file
from histocluster.segmentation.network_runtime import load_nuclei_network, predict_probabilities
from histocluster.segmentation.nuclei_net import (
    InferenceUNet,
    NucleiUNet,
    TorchNucleiNetwork,
    fold_batch_norm,
    load_network,
    max_pool_2x2,
)
from histocluster.segmentation.settings import WatershedSettings
from histocluster.segmentation.watershed import segment_nuclei
from tests.conftest import SHARED
from tests.test_watershed import CENTRES, synthetic_he

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_weights_are_in_the_package():
    network = load_network()
    assert DEFAULT_WEIGHTS.is_file()
    assert not network.training


def test_missing_weights_name_the_file_and_the_setting(tmp_path):
    with pytest.raises(UserInputError, match=r"nope\.pt.*weights_path"):
        load_network(tmp_path / "nope.pt")


def test_a_file_that_is_no_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="not a nuclei network checkpoint"):
        load_network(bad)


def test_the_torch_free_check_passes_the_shipped_weights_without_importing_torch():
    code = (
        "import sys; from histocluster.segmentation.network_file import DEFAULT_WEIGHTS, check_network_file; "
        "print(check_network_file(None)); assert 'torch' not in sys.modules, 'torch imported'"
    )
    # Without PYTHONPATH: Kedro's bootstrap in earlier tests points it at project copies.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(DEFAULT_WEIGHTS)


def test_the_torch_free_check_refuses_broken_and_foreign_checkpoints(tmp_path):
    good = DEFAULT_WEIGHTS.read_bytes()
    cases = {
        "missing.pt": None,
        "text.pt": b"not a checkpoint",
        "truncated.pt": good[: len(good) // 2],
        "flipped.pt": good[:-5000] + bytes(b ^ 0xFF for b in good[-5000:-4000]) + good[-4000:],
    }
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, foreign)
    no_tensors = tmp_path / "no_tensors.pt"
    torch.save({"channels": [12, 24], "state_dict": {"w": 1.0}}, no_tensors)
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    for path in [tmp_path / name for name in cases] + [foreign, no_tensors]:
        with pytest.raises(
            UserInputError, match=rf"{path.name}: .*(not a nuclei network checkpoint|not found)"
        ):
            check_network_file(path)
    # The real loader agrees on every one of them.
    for path in [tmp_path / name for name in cases] + [foreign, no_tensors]:
        with pytest.raises(UserInputError):
            load_network(path)


def test_folding_batch_norm_keeps_the_outputs():
    torch.manual_seed(0)
    network = NucleiUNet()
    for module in network.modules():  # batch norms that do something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    network.eval()
    x = torch.rand(1, 3, 40, 48)
    with torch.inference_mode():
        before = network(x)
        folded = fold_batch_norm(network)
        after = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(NucleiUNet().train())


def _trained_looking_network(seed: int) -> NucleiUNet:
    """A NucleiUNet with random weights and batch-norm statistics that do something."""
    torch.manual_seed(seed)
    network = NucleiUNet()
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return network.eval()


@pytest.mark.parametrize("shape", [(40, 48), (64, 24)])
def test_the_inference_network_computes_what_was_trained(shape):
    """Rearranged for speed (transposed convolutions instead of upsample + concatenate,
    pooling by element-wise maxima), the network still computes the trained function,
    on non-square inputs and in channels-last memory as the segmenter runs it."""
    network = _trained_looking_network(1)
    x = torch.rand(2, 3, *shape)
    with torch.inference_mode():
        expected = network(x)
        fast = InferenceUNet(network).to(memory_format=torch.channels_last)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert expected.std() > 0.01  # a real signal, not a constant on both sides
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        InferenceUNet(NucleiUNet().train())


def test_two_by_two_max_pooling_matches_torch():
    x = torch.randn(2, 5, 6, 10)
    for memory in (torch.contiguous_format, torch.channels_last):
        y = x.contiguous(memory_format=memory)
        torch.testing.assert_close(max_pool_2x2(y), torch.nn.functional.max_pool2d(y, 2), atol=0, rtol=0)
    with pytest.raises(ValueError, match="even"):
        max_pool_2x2(torch.zeros(1, 1, 5, 4))


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize(
    ("shape", "mpp", "expected"),
    [((203, 150), 0.25, (102, 75)), ((77, 64), 0.5, (77, 64)), ((30, 41), 1.0, (60, 82))],
)
def test_probabilities_come_at_the_work_resolution(shape, mpp, expected, runtime):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    probabilities = predict_probabilities(load_nuclei_network(runtime=runtime), rgb, mpp)
    assert probabilities.shape == (3, *expected)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


MONUSEG = SHARED / "bench" / "monuseg"
CRC = SHARED / "bench" / "crc"


@pytest.mark.slow
@pytest.mark.skipif(not (MONUSEG / "info.json").is_file(), reason="MoNuSeg bench set not in shared data")
def test_network_beats_the_threshold_path_on_monuseg():
    """Over the 13 development images the network foreground must beat the classical
    threshold on object F1, AJI and PQ. The shipped weights were trained on these images
    too, so this guards against a broken network, not generalisation: the held-out figures
    come from ``bench/crossval_nuclei_net.py`` and the CRC test below."""
    means = {}
    for foreground in ("network", "threshold"):
        _, summary = evaluate(
            MONUSEG, partial(segment_nuclei, settings=WatershedSettings(foreground=foreground))
        )
        means[foreground] = summary["mean"]
    for metric in ("f1", "aji", "pq"):
        assert means["network"][metric] > means["threshold"][metric] + 0.02, (metric, means)


@pytest.mark.slow
@pytest.mark.skipif(not (CRC / "info.json").is_file(), reason="CRC bench set not in shared data")
def test_network_finds_more_marked_nuclei_on_unseen_20x_images():
    """CRCHistoPhenotypes (never trained on; 20×, 0.55 µm/px like the pipeline's tiles):
    the network foreground must find clearly more of the marked nucleus centres than the
    threshold, without merging more of them, and no cell type may be mostly missed."""
    results = {
        foreground: evaluate_points(
            CRC, partial(segment_nuclei, settings=WatershedSettings(foreground=foreground))
        )
        for foreground in ("network", "threshold")
    }
    network, threshold = results["network"], results["threshold"]
    assert network["recall"] > max(0.85, threshold["recall"] + 0.05), results
    assert network["single"] >= threshold["single"], results
    for cell_type, recall in network["recall_per_type"].items():
        assert recall > 0.6, (cell_type, results)


def write_bench(root: Path, mpp: float, size_um: float, count: int) -> Path:
    """A bench set of ``count`` synthetic H&E images with their instance maps."""
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    (root / "info.json").write_text(json.dumps({"mpp": mpp}))
    for i in range(count):
        rgb, truth = synthetic_he(mpp, CENTRES, size_um=size_um, seed=i)
        Image.fromarray(rgb).save(root / "images" / f"t{i}.png")
        Image.fromarray(truth.astype(np.uint16)).save(root / "instances" / f"t{i}.png")
    return root


def test_training_script_writes_a_checkpoint_the_segmenter_loads(tmp_path):
    """Two sets of different image sizes and resolutions, one image held out."""
    small = write_bench(tmp_path / "small", 0.25, 64.0, 4)
    large = write_bench(tmp_path / "large", 0.5, 80.0, 2)
    out = tmp_path / "net.pt"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_nuclei_net.py"), str(small), str(large), "--out", str(out),
         "--exclude", "t1", "--epochs", "2", "--steps", "2", "--batch", "2", "--crop", "24", "--threads", "1"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    network = load_network(out)
    assert isinstance(network, InferenceUNet)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["trained_on"] == [
        {"set": "small", "images": ["t0", "t2", "t3"]},
        {"set": "large", "images": ["t0"]},
    ]
    assert checkpoint["epochs"] == 2
    rgb, _ = synthetic_he(0.5, CENTRES, size_um=64.0)
    labels = segment_nuclei(rgb, 0.5, WatershedSettings(weights_path=str(out)))
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.int32
    # The ONNX export beside it is the same network, for installs without torch.
    onnx_file = out.with_suffix(".onnx")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["net.onnx", "net.pt"]
    np.testing.assert_allclose(
        predict_probabilities(load_nuclei_network(onnx_file), rgb, 0.5),
        predict_probabilities(load_nuclei_network(out, precision="float32"), rgb, 0.5),
        atol=1e-5,
    )


def test_training_script_refuses_a_crop_larger_than_the_images(tmp_path):
    bench = write_bench(tmp_path / "tiny", 0.5, 10.0, 1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_nuclei_net.py"), str(bench), "--out", str(tmp_path / "n.pt"),
         "--epochs", "1", "--steps", "1", "--batch", "1", "--crop", "40", "--threads", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "t0: 20×20 px is smaller than a 40 px crop" in result.stderr
    assert not (tmp_path / "n.pt").exists()


def test_precision_setting_picks_bfloat16_only_where_asked_or_native(monkeypatch):
    from histocluster.segmentation import network_runtime

    assert network_runtime.network_bfloat16("float32") is False
    assert network_runtime.network_bfloat16("bfloat16") is True
    for native in (True, False):
        monkeypatch.setattr(network_runtime, "cpu_has_bfloat16", lambda native=native: native)
        assert network_runtime.network_bfloat16("auto") is native
        assert network_runtime.choose_network(runtime="torch").bfloat16 is native
        assert network_runtime.choose_network(runtime="onnxruntime").bfloat16 is False
    with pytest.raises(Exception, match="precision"):
        WatershedSettings(precision="float16")


def test_bfloat16_gives_the_float32_probabilities_on_a_real_tile(cmu_slide):
    """The network in bfloat16 (what `precision: auto` picks on CPUs with AMX) agrees with
    float32 on a real tile of the sample slide: same class at ≥ 99% of pixels,
    probabilities within 0.1. (Quality on MoNuSeg at 0.5 µm/px and CRC: README.)"""
    from histocluster.wsi.slides import open_slide

    with open_slide(cmu_slide) as reader:
        rgb = reader.read_region((700, 1300), 0, (256, 256))
    full = predict_probabilities(TorchNucleiNetwork(), rgb, 0.5)
    half = predict_probabilities(TorchNucleiNetwork(bfloat16=True), rgb, 0.5)
    assert half.dtype == np.float32 and half.shape == full.shape
    assert (half.argmax(0) == full.argmax(0)).mean() >= 0.99
    assert np.abs(half - full).max() < 0.1
    assert not np.array_equal(half, full)  # it did run in another precision
