"""kedro viz build produces the static DAG with our pipelines and layers."""

from __future__ import annotations

import json

import pytest

from .conftest import run

pytestmark = pytest.mark.slow


def test_viz_build(project):
    root = project([])
    run(["kedro", "viz", "build"], cwd=root)
    main = json.loads((root / "build" / "api" / "main").read_text())
    layers = {node["name"]: node.get("layer") for node in main["nodes"] if node["type"] == "data"}
    assert layers["raw_slides"] == "raw"
    assert layers["tiles"] == "intermediate" and layers["tile_quality"] == "primary"
    assert layers["tiling_overview_figure"] == "reporting"  # from the dataset factory
    assert {
        "tiling",
        "filtering",
        "segmentation",
        "clustering",
        "classification",
        "annotation",
        "evaluation",
        "prep",
        "analysis",
        "relabel",
        "__default__",
    } <= {p["id"] for p in main["pipelines"]}
    tasks = {node["name"] for node in main["nodes"] if node["type"] == "task"}
    assert {
        "describe_slides",
        "plan_tiles",
        "segment_tiles",
        "draw_contact_sheets",
        "pick_gallery_cells",
        "crop_gallery_cells",
    } <= tasks
    assert {
        "embed_cells",
        "cluster_cells",
        "ask_model",
        "label_cells",
        "export_qupath",
        "write_report",
    } <= tasks
    assert layers["cell_embeddings"] == "feature" and layers["clusterer"] == "models"
    assert layers["cluster_map_plot"] == "reporting" and layers["report_html"] == "reporting"
    relabel = json.loads((root / "build" / "api" / "pipelines" / "relabel").read_text())
    assert {n["name"] for n in relabel["nodes"] if n["type"] == "task"} >= {"label_clusters", "write_report"}
    assert "segment_tiles" not in {n["name"] for n in relabel["nodes"]}
    # The optional evaluation pipeline is not in the default run, but has its own page.
    assert "evaluate_segmentation" not in tasks
    evaluation = json.loads((root / "build" / "api" / "pipelines" / "evaluation").read_text())
    assert "evaluate_segmentation" in {n["name"] for n in evaluation["nodes"]}
