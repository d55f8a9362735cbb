"""The classification pipeline in real Kedro sessions: no key, a person's labels, and the
real openai client talking to a Chat Completions server on loopback."""

from __future__ import annotations

import logging

import pytest

from .chat_server import ChatServer, completion
from .conftest import kedro_run, load, make_project, messages

pytestmark = pytest.mark.slow
KEY = "sk-test-NEVER-IN-OUTPUTS-42"


@pytest.fixture(scope="module")
def project_root(tmp_path_factory, cmu_slide):
    root = make_project(tmp_path_factory.mktemp("classification") / "project", [cmu_slide])
    kedro_run(root, **{"tiling.max_tiles": 2, "clustering.clusterer.kmeans.cells_per_cluster": 50})
    return root


@pytest.fixture
def in_project(project_root, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    labels = project_root / "conf" / "local" / "cluster_labels.yml"
    labels.unlink(missing_ok=True)
    yield project_root
    labels.unlink(missing_ok=True)


def test_without_a_key_human_labels_still_reach_every_cell(in_project):
    root = in_project
    (root / "conf" / "local" / "cluster_labels.yml").write_text(
        "0: lymphocyte\ncluster 1: fibroblast\n99: tumour\n"
    )
    records: list[logging.LogRecord] = []
    kedro_run(root, "classification", log=records)
    clusters, answers, cluster_labels, cell_labels, counts = load(
        root, "clusters", "representative_answers", "cluster_labels", "cell_labels", "label_counts"
    )
    log = messages(records)
    assert "no API key" in log and "the model step is skipped" in log
    assert "names cluster(s) [99], which this clustering does not have" in log
    assert set(answers["status"]) == {"skipped"} and answers["label"].isna().all()
    assert len(answers) == 10 * clusters["cluster_id"].nunique()  # 10 representatives per cluster
    by_cluster = cluster_labels.set_index("cluster_id")
    assert by_cluster.loc[0, "label"] == "lymphocyte" and by_cluster.loc[0, "source"] == "human"
    assert by_cluster.loc[1, "label"] == "fibroblast"
    assert (by_cluster.drop([0, 1])["label"] == "unlabelled").all()
    # Every cell: its cluster's label or an explicit status.
    assert sorted(cell_labels["cell_id"]) == sorted(clusters["cell_id"])
    merged = cell_labels.merge(clusters[["cell_id", "cluster_id"]], on="cell_id", suffixes=("", "_c"))
    assert (merged.loc[merged.cluster_id == 0, "label"] == "lymphocyte").all()
    assert (merged.loc[merged.cluster_id >= 2, "label"] == "unlabelled").all()
    overall = counts[counts["slide_id"] == "all"].set_index("label")["cells"]
    assert overall["lymphocyte"] == (clusters["cluster_id"] == 0).sum() and overall.sum() == len(clusters)
    crops = list((root / "data" / "07_model_output" / "representative_crops" / "0").glob("*.png"))
    assert len(crops) == 10


def test_a_model_on_loopback_labels_clusters_and_a_rerun_asks_only_what_was_not_answered(
    in_project, monkeypatch
):
    root = in_project
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    # The "model" calls every cell a lymphocyte, except in two of every ten requests.
    def replies(request, n):
        return (
            200,
            completion('{"label": "lymphocyte"}' if n % 10 > 1 else "no idea"),
            {},
            0.0,
        )

    records: list[logging.LogRecord] = []
    with ChatServer(replies) as server:
        params = {"classification.vlm.base_url": server.base_url, "classification.vlm.model": "loopback"}
        kedro_run(root, "classification", log=records, **params)
        first = len(server.requests)
        (before,) = load(root, "representative_answers")
        kedro_run(root, "classification", log=records, **params)
        # Valid answers come from the cache; rejected ones were not cached and are asked again.
        rejected = int((before["status"] == "rejected").sum())
        assert first == len(before) > 0 and rejected > 0
        assert len(server.requests) == first + rejected
    answers, cluster_labels, cell_labels = load(
        root, "representative_answers", "cluster_labels", "cell_labels"
    )
    assert set(answers["status"]) <= {"ok", "rejected"}
    assert answers["cached"].sum() == (before["status"] == "ok").sum()
    assert (answers.loc[answers.cached, "label"] == "lymphocyte").all()
    assert (answers.loc[answers.status == "rejected", "label"].isna()).all()
    labelled = cluster_labels[cluster_labels["status"] == "labelled"]
    assert (
        len(labelled) >= 1 and set(labelled["label"]) == {"lymphocyte"} and set(labelled["source"]) == {"vlm"}
    )
    assert (cell_labels["label"].isin(["lymphocyte", "unlabelled", "review"])).all()
    assert "were not in the vocabulary and were rejected" in messages(records)
    # The key never reaches a log line or a file the run wrote.
    assert KEY not in messages(records)
    for path in (root / "data").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_labels_file_mistake_is_one_clear_message(in_project):
    from .conftest import kedro_user_error

    root = in_project
    (root / "conf" / "local" / "cluster_labels.yml").write_text("lymphocytes: 7\n")
    output = kedro_user_error(root, "--pipelines=classification")
    assert "cluster_labels.yml: line 1: 'lymphocytes' is not a cluster number" in output


def test_key_from_kedro_credentials(in_project):
    root = in_project
    credentials = root / "conf" / "local" / "credentials.yml"
    credentials.write_text(f"openai:\n  api_key: {KEY}\n")
    try:
        with ChatServer(lambda request, n: (200, completion('{"label": "fibroblast"}'), {}, 0.0)) as server:
            kedro_run(
                root,
                "classification",
                **{
                    "classification.vlm.base_url": server.base_url,
                    "classification.vlm.model": "from-credentials",
                },
            )
        assert server.requests and {r["headers"]["authorization"] for r in server.requests} == {
            f"Bearer {KEY}"
        }
    finally:
        credentials.unlink()
    (cluster_labels,) = load(root, "cluster_labels")
    assert set(cluster_labels["label"]) == {"fibroblast"} and set(cluster_labels["model"]) == {
        "from-credentials"
    }
