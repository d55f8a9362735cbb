"""The nuclei U-Net behind the watershed's default foreground: loading, shapes, training."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.segmentation_evaluation import evaluate
from histocluster.segmenters.nuclei_net import (
    DEFAULT_WEIGHTS,
    NucleiUNet,
    load_network,
    predict_probabilities,
)
from histocluster.segmenters.watershed import WatershedSettings, segment_nuclei
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


@pytest.mark.parametrize(
    ("shape", "mpp", "expected"), [((203, 150), 0.25, (102, 75)), ((77, 64), 0.5, (77, 64))]
)
def test_probabilities_come_at_the_work_resolution(shape, mpp, expected):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    probabilities = predict_probabilities(load_network(), rgb, mpp)
    assert probabilities.shape == (3, *expected)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-5)


MONUSEG = SHARED / "bench" / "monuseg"


@pytest.mark.skipif(not (MONUSEG / "info.json").is_file(), reason="MoNuSeg bench set not in shared data")
def test_network_beats_the_threshold_path_on_monuseg():
    """Over the 13 development images (never seen in training), the network foreground
    must beat the classical threshold on object F1, AJI and PQ."""
    means = {}
    for foreground in ("network", "threshold"):
        _, summary = evaluate(
            MONUSEG, partial(segment_nuclei, settings=WatershedSettings(foreground=foreground))
        )
        means[foreground] = summary["mean"]
    for metric in ("f1", "aji", "pq"):
        assert means["network"][metric] > means["threshold"][metric] + 0.02, (metric, means)


def test_training_script_writes_a_checkpoint_the_segmenter_loads(tmp_path):
    bench = tmp_path / "bench"
    (bench / "images").mkdir(parents=True)
    (bench / "instances").mkdir()
    (bench / "info.json").write_text(json.dumps({"mpp": 0.25}))
    for i in range(4):
        rgb, truth = synthetic_he(0.25, CENTRES, size_um=64.0, seed=i)
        Image.fromarray(rgb).save(bench / "images" / f"t{i}.png")
        Image.fromarray(truth.astype(np.uint16)).save(bench / "instances" / f"t{i}.png")
    out = tmp_path / "net.pt"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train_nuclei_net.py"), str(bench), "--out", str(out),
         "--epochs", "2", "--batch", "2", "--crop", "24", "--threads", "1"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    network = load_network(out)
    assert isinstance(network, NucleiUNet)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["trained_on"] == "bench" and checkpoint["epochs"] == 2
    rgb, _ = synthetic_he(0.5, CENTRES, size_um=64.0)
    labels = segment_nuclei(rgb, 0.5, WatershedSettings(weights_path=str(out)))
    assert labels.shape == rgb.shape[:2] and labels.dtype == np.int32
