"""The clustering pipeline through real Kedro sessions on the real sample slide."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import kedro_run, load, messages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clustered(tmp_path_factory, cmu_slide):
    """Tiling → filtering → segmentation → clustering (kedro run, the default pipeline)
    on three tiles of the sample slide."""
    from .conftest import make_project

    root = make_project(tmp_path_factory.mktemp("clustering") / "project", [cmu_slide])
    records: list[logging.LogRecord] = []
    kedro_run(
        root, log=records, **{"tiling.max_tiles": 3, "clustering.clusterer.kmeans.cells_per_cluster": 40}
    )
    return root, records


def test_every_cell_gets_a_cluster_a_confidence_and_a_place_on_the_map(clustered):
    root, records = clustered
    cells, clusters, embeddings = load(root, "cells", "clusters", "cell_embeddings")
    assert len(cells) > 100
    assert list(clusters.columns) == [
        "cell_id",
        "slide_id",
        "tile_id",
        "cluster_id",
        "is_noise",
        "confidence",
        "map_x",
        "map_y",
    ]
    assert sorted(clusters["cell_id"]) == sorted(cells["cell_id"])
    assert list(embeddings.cell_ids) == list(clusters["cell_id"])
    assert embeddings.matrix.dtype == np.float32 and np.isfinite(embeddings.matrix).all()
    expected_k = round(len(cells) / 40)
    assert clusters["cluster_id"].nunique() == expected_k and not clusters["is_noise"].any()
    assert clusters["confidence"].between(0, 1).all() and clusters["confidence"].gt(0).mean() > 0.5
    assert np.isfinite(clusters[["map_x", "map_y"]].to_numpy()).all()
    log = messages(records)
    assert "UMAP: CPU (device: cpu)" in log and "kmeans: CPU (device: cpu)" in log
    assert f"KMeans: {expected_k} clusters for {len(cells)} cells" in log


def test_summary_and_representatives(clustered):
    root, _ = clustered
    clusters, summary, reps = load(root, "clusters", "cluster_summary", "cluster_representatives")
    assert summary["size"].sum() == len(clusters)
    assert (summary["size"].diff().dropna() <= 0).all()  # numbered from the largest
    by_cluster = clusters.set_index("cell_id")["cluster_id"]
    assert (by_cluster.loc[reps["cell_id"]].to_numpy() == reps["cluster_id"].to_numpy()).all()
    assert reps.groupby("cluster_id").size().max() <= 10
    for row in summary.itertuples():
        assert sum(json.loads(row.slide_counts).values()) == row.size
        assert list(row.representatives) == list(reps.loc[reps.cluster_id == row.cluster_id, "cell_id"])
    # Representatives come from several tiles whenever their candidates (the 5 × 10 most
    # confident cells of the cluster, parameters_clustering.yml) lie in several.
    members = clusters[clusters["cluster_id"] >= 0].sort_values(
        ["confidence", "cell_id"], ascending=[False, True]
    )
    candidate_tiles = members.groupby("cluster_id").head(5 * 10).groupby("cluster_id")["tile_id"].nunique()
    rep_tiles = reps.groupby("cluster_id")["tile_id"].nunique()
    spread = candidate_tiles[candidate_tiles > 1].index
    assert len(spread) > 0 and (rep_tiles.loc[spread] > 1).all()


def test_plots_and_fitted_models(clustered):
    root, _ = clustered
    report = root / "data" / "08_reporting"
    for name in ("cluster_map.png", "cluster_sizes.png"):
        with Image.open(report / name) as image:
            assert image.size[0] > 300
    figure = json.loads((report / "cluster_map.json").read_text())
    assert sum(len(trace["x"]) for trace in figure["data"]) > 100
    clusters, embeddings, reducer, clusterer = load(
        root, "clusters", "cell_embeddings", "reducer", "clusterer"
    )
    # The fitted reducer and clusterer place cells again: the training cells mostly land
    # back in their own clusters (the clusterer places by a kNN vote, so some cells at a
    # cluster's edge go to the neighbour; a reducer that did not match would give ~1/k).
    placed, confidence = clusterer.predict(reducer["reduction"].transform(embeddings.matrix[:200]))
    assert (placed == clusters["cluster_id"].to_numpy()[:200]).mean() > 0.8
    assert ((confidence >= 0) & (confidence <= 1)).all()
    # ... and on the 2-D map where they were drawn.
    mapped = reducer["map"].transform(reducer["reduction"].transform(embeddings.matrix[:50]))
    drawn = clusters[["map_x", "map_y"]].to_numpy()[:50]
    assert np.abs(mapped - drawn).max() < 0.01 * np.ptp(clusters[["map_x", "map_y"]].to_numpy(), axis=0).max()


def test_no_cells_gives_empty_outputs_and_a_message(project, kidney_image):
    root = project([kidney_image])  # blank for the tissue detector: no tiles, no cells
    records: list[logging.LogRecord] = []
    kedro_run(root, log=records)
    cells, clusters, summary, reps = load(
        root, "cells", "clusters", "cluster_summary", "cluster_representatives"
    )
    assert len(cells) == len(clusters) == len(summary) == len(reps) == 0
    assert "cluster_id" in clusters.columns and "representatives" in summary.columns
    log = messages(records)
    assert "the cell table is empty" in log and "no cells to cluster" in log
    assert (root / "data" / "08_reporting" / "cluster_map.png").is_file()


@pytest.mark.parametrize("method", ["dbscan", "hdbscan", "leiden"])
def test_other_clusterers_run_in_the_pipeline(clustered, method, tmp_path):
    root, _ = clustered
    records: list[logging.LogRecord] = []
    kedro_run(
        root,
        "clustering",
        log=records,
        **{"clustering.clusterer.method": method, "clustering.reduction.method": "pca"},
    )
    clusters, clusterer = load(root, "clusters", "clusterer")
    assert clusterer.method == method  # the asked method ran, not the default
    assert clusters["confidence"].between(0, 1).all()
    assert (clusters.loc[clusters["is_noise"], "cluster_id"] == -1).all()
    assert f"clusters ({method}, global)" in messages(records)


def test_resnet_and_morphology_combined_with_random_weights(clustered, tmp_path):
    """The resnet50 embedder in a real run, with a randomly initialised checkpoint."""
    import torch
    from torchvision.models import resnet50

    root, _ = clustered
    weights = tmp_path / "random-resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), weights)
    records: list[logging.LogRecord] = []
    params = {
        "segmentation.cell_features.deep": "resnet50",
        "segmentation.cell_features.resnet50.weights_path": str(weights),
        "segmentation.cell_features.resnet50.input_size": 64,
        "segmentation.cell_features.resnet50.device": "cpu",
        "clustering.embedders": {"morphology": 1.0, "resnet50": 0.5},
        "clustering.reduction.method": "pca",
        "tiling.max_tiles": 3,
    }
    for pipeline in ("tiling", "segmentation", "clustering"):  # the ResNet features come from the pass
        kedro_run(root, pipeline, log=records, **params)
    cells, deep, embeddings = load(root, "cells", "cell_deep_features", "cell_embeddings")
    assert sorted(deep.cell_ids) == sorted(cells["cell_id"]) and deep.dim == 2048
    morphology = [c for c in embeddings.columns if c.startswith("morphology:")]
    assert embeddings.dim == len(morphology) + 2048
    block = np.asarray(embeddings.matrix)
    # Each block's share of the total variance follows its weight (1 : 0.5²).
    share = (block[:, len(morphology) :] ** 2).sum() / (block[:, : len(morphology)] ** 2).sum()
    assert 0.15 < share < 0.35
    assert f"ResNet-50 embedder: weights {weights} on cpu" in messages(records)


def test_missing_resnet_weights_stop_the_run_with_a_clear_message(clustered, tmp_path):
    from .conftest import kedro_user_error

    root, _ = clustered
    output = kedro_user_error(
        root,
        "--pipelines=segmentation",
        "--params",
        "segmentation.cell_features.deep=resnet50,clustering.embedders.resnet50=1.0,"
        f"segmentation.cell_features.resnet50.weights_path={tmp_path / 'none.pth'}",
    )
    assert "ResNet-50 weights not found" in output and "none.pth" in output
    # Asking clustering for ResNet features the pass does not compute: said before any work.
    output = kedro_user_error(root, "--pipelines=clustering", "--params", "clustering.embedders.resnet50=1.0")
    assert "segmentation.cell_features.deep: resnet50" in output


def test_type_network_and_morphology_combined_in_a_real_run(clustered):
    """The typenet embedder in a real run, with the shipped weights; its features reach the
    clustering embedding at their weight."""
    root, _ = clustered
    records: list[logging.LogRecord] = []
    params = {
        "segmentation.cell_features.deep": "typenet",
        "segmentation.cell_features.typenet.rotations": 1,
        "clustering.embedders": {"morphology": 1.0, "typenet": 0.5},
        "clustering.reduction.method": "pca",
        "tiling.max_tiles": 3,
    }
    for pipeline in ("tiling", "segmentation", "clustering"):
        kedro_run(root, pipeline, log=records, **params)
    cells, deep, embeddings = load(root, "cells", "cell_deep_features", "cell_embeddings")
    assert sorted(deep.cell_ids) == sorted(cells["cell_id"]) and deep.dim == 132
    assert deep.columns[0] == "typenet:f0" and deep.columns[-4:] == [
        f"typenet:logp_{c}" for c in ("epithelial", "fibroblast", "inflammatory", "others")
    ]
    morphology = [c for c in embeddings.columns if c.startswith("morphology:")]
    assert embeddings.dim == len(morphology) + 132
    block = np.asarray(embeddings.matrix)
    share = (block[:, len(morphology) :] ** 2).sum() / (block[:, : len(morphology)] ** 2).sum()
    assert 0.15 < share < 0.35  # 1 : 0.5²
    assert "Type-network embedder: type_net.onnx" in messages(records)


def test_type_network_settings_that_cannot_work_stop_the_run_before_any_work(clustered, tmp_path):
    from .conftest import kedro_user_error

    root, _ = clustered
    output = kedro_user_error(
        root,
        "--pipelines=segmentation",
        "--params",
        "segmentation.cell_features.deep=typenet,clustering.embedders.typenet=1.0,"
        f"segmentation.cell_features.typenet.weights_path={tmp_path / 'none.pt'}",
    )
    assert "type network weights not found" in output and "none.pt" in output
    output = kedro_user_error(root, "--pipelines=clustering", "--params", "clustering.embedders.typenet=1.0")
    assert "segmentation.cell_features.deep: typenet" in output
    output = kedro_user_error(
        root,
        "--pipelines=clustering",
        "--params",
        "segmentation.cell_features.deep=typenet,clustering.embedders.typenet=1.0,clustering.embedders.resnet50=1.0",
    )
    assert "resnet50 and typenet cannot both be used" in output


#: Off by default (tiling.write_tile_images, segmentation.export_label_masks): a DVC out
#: that a default run does not write would fail `dvc repro`. README says to `dvc add` them.
OPTIONAL_OUTPUTS = {"tile_image_png", "label_masks"}


def test_every_pipeline_output_is_tracked_by_its_dvc_stage(clustered):
    """dvc.yaml's outs cover what each pipeline writes to disk (Kedro's catalog)."""
    import yaml
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    root, _ = clustered
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    bootstrap_project(root)
    with KedroSession.create(project_path=root) as session:
        catalog = session.load_context().catalog
        for stage, spec in stages.items():
            outs = [next(iter(o)) if isinstance(o, dict) else o for o in spec["outs"]]
            for name in pipelines[stage].outputs() - OPTIONAL_OUTPUTS:
                described = catalog.get(name)._describe()
                path = described.get("filepath") or described.get("path")
                if path is None:
                    continue  # kept in memory
                relative = Path(str(path)).resolve().relative_to(root.resolve()).as_posix()
                assert any(relative == o or relative.startswith(o + "/") for o in outs), (
                    stage,
                    name,
                    relative,
                )
