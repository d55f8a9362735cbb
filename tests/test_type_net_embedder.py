"""The ``typenet`` embedder (the cell-type network shipped with the package) through its
real code path: the segmentation pass, which holds the tile read with a margin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

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

from .conftest import KnownLabels, one_tile, pass_settings


@pytest.fixture
def slide(image_slide):
    record, labels, rgb = image_slide
    return record, pd.DataFrame([one_tile(rgb.shape[1], rgb.shape[0])]), labels


def run_pass(slide, settings: TypeNetSettings):
    record, tiles, labels = slide
    features = CellFeatureSettings(deep="typenet", typenet=settings)
    deep = TypeNetEmbedder(settings).tile_features
    return process_slide(record, tiles, KnownLabels(labels), pass_settings(features=features), deep)


def test_shipped_model_is_in_the_package_runs_in_onnxruntime_and_names_four_types():
    net = load_type_net()
    assert SHIPPED_WEIGHTS.suffix == ".onnx" and SHIPPED_WEIGHTS.stat().st_size < 2_000_000
    assert net.session is not None and net.module is None
    assert net.classes == ["epithelial", "fibroblast", "inflammatory", "others"]


def test_a_checkpoint_and_its_onnx_export_give_the_same_features(tmp_path):
    import torch

    from histocluster.features.type_net import build_type_net, export_onnx

    torch.manual_seed(0)
    module = build_type_net(3)
    for layer in module.modules():  # running statistics that are not 0 / 1, as after training
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    checkpoint = tmp_path / "random.pt"
    torch.save({"classes": ["a", "b", "c"], "state_dict": module.state_dict()}, checkpoint)
    exported = export_onnx(checkpoint, tmp_path / "random.onnx")
    crops = np.random.default_rng(1).integers(0, 255, (5, CROP, CROP, 3), dtype=np.uint8)
    in_torch, in_onnx = load_type_net(checkpoint), load_type_net(exported)
    assert in_torch.module is not None and in_onnx.session is not None and in_onnx.classes == ["a", "b", "c"]
    a, b = crop_features(in_torch, crops, rotations=1), crop_features(in_onnx, crops, rotations=1)
    assert a.shape == (5, WIDTH + 3) and np.allclose(a, b, atol=1e-4)
    assert not np.allclose(a[0], a[1], atol=1e-3)  # different crops differ


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
    net = load_type_net()
    averaged = crop_features(net, np.concatenate([crop, turned]), rotations=8)
    assert np.allclose(averaged[0], averaged[1], atol=1e-4)
    single = crop_features(net, np.concatenate([crop, turned]), rotations=1)
    assert not np.allclose(single[0], single[1], atol=1e-3)  # one view alone does depend on it


def test_without_torch_the_shipped_model_runs_and_a_checkpoint_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    checkpoint = tmp_path / "mine.pt"
    checkpoint.write_bytes(b"a torch checkpoint")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    assert TypeNetEmbedder(TypeNetSettings()).classes[0] == "epithelial"  # the default install's path
    # And for real: a process in which torch cannot be imported computes the features.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from histocluster.features.type_net import crop_features, load_type_net\n"
        "out = crop_features(load_type_net(), np.full((2, 40, 40, 3), 128, np.uint8), rotations=8)\n"
        "assert out.shape == (2, 132) and np.isfinite(out).all() and 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "ok"
    )
    with pytest.raises(
        TypeNetWeightsError, match=r"torch is not installed: pip install 'histocluster\[train\]'"
    ):
        TypeNetEmbedder(TypeNetSettings(weights_path=str(checkpoint)))


def test_missing_or_foreign_weights_are_a_clear_error(tmp_path):
    with pytest.raises(TypeNetWeightsError, match="nowhere.pt"):
        TypeNetEmbedder(TypeNetSettings(weights_path=str(tmp_path / "nowhere.pt")))
    for name in ("bad.pt", "bad.onnx"):
        bad = tmp_path / name
        bad.write_bytes(b"not a model")
        with pytest.raises(TypeNetWeightsError, match="not a type-network model"):
            TypeNetEmbedder(TypeNetSettings(weights_path=str(bad)))


def test_each_cluster_gets_the_type_most_of_its_cells_got_from_the_network():
    """The network's type of a cell is the type of its highest log-probability; a cluster's
    suggestion is the type most of its cells got, with their share; noise and cells without
    network features are left out; features without the network's types give nothing."""
    from histocluster.clustering.summary import network_type_shares
    from histocluster.features.embeddings import Embeddings
    from histocluster.features.type_net import network_cell_types

    logp = np.log(
        np.array(
            [
                [0.7, 0.2, 0.1],
                [0.1, 0.8, 0.1],
                [0.6, 0.3, 0.1],
                [0.2, 0.2, 0.6],
                [0.1, 0.1, 0.8],
                [0.9, 0.05, 0.05],
            ],
            np.float32,
        )
    )
    features = np.hstack([np.zeros((6, 2), np.float32), logp])
    features[3] = np.nan  # a cell the network never saw
    ids = np.array(list("abcdef"), dtype=object)
    columns = [
        "typenet:f0",
        "typenet:f1",
        "typenet:logp_epithelial",
        "typenet:logp_fibroblast",
        "typenet:logp_others",
    ]
    deep = Embeddings(ids, features, columns)
    types = network_cell_types(deep, chunk=4)  # two blocks
    assert types["network_type"].tolist() == [
        "epithelial",
        "fibroblast",
        "epithelial",
        None,
        "others",
        "epithelial",
    ]
    assert types["network_probability"].iloc[[0, 1, 4]].tolist() == pytest.approx([0.7, 0.8, 0.8])
    assert np.isnan(types["network_probability"].iloc[3])
    clusters = pd.DataFrame({"cell_id": ids, "cluster_id": [0, 0, 0, 1, 1, -1]})
    shares = network_type_shares(clusters, deep).set_index("cluster_id")
    # cluster 0: epithelial, fibroblast, epithelial → epithelial 2/3; cluster 1: d has no
    # type, e others → others 1/1; f is noise.
    assert shares.index.tolist() == [0, 1]
    assert shares["network_type"].tolist() == ["epithelial", "others"]
    assert shares["network_share"].tolist() == pytest.approx([2 / 3, 1.0])
    numbered = Embeddings(ids, features, [f"resnet50:{k}" for k in range(5)])
    assert network_cell_types(numbered) is None and network_cell_types(None) is None
    assert network_type_shares(clusters, numbered) is None
