"""Votes, a person's labels file, propagation to every cell and counts, by hand."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from histocluster.labelling.cluster_labels import apply_human, name_clusters, vote
from histocluster.labelling.labels_file import LabelsFileError, match_vocabulary, read_cluster_labels
from histocluster.labelling.propagation import count_labels, propagate
from histocluster.labelling.settings import ClassificationParams


def answers(rows):
    return pd.DataFrame(rows, columns=["cluster_id", "label", "status", "cost_usd"])


def test_majority_vote_agreement_and_review():
    table = answers(
        [
            (0, "lymphocyte", "ok", 0.01),
            (0, "lymphocyte", "ok", 0.01),
            (0, "fibroblast", "ok", 0.01),
            (0, None, "rejected", 0.01),  # not a vote
            (1, "fibroblast", "ok", 0.0),
            (1, "epithelial", "ok", 0.0),
            (2, None, "error", 0.0),
        ]
    )
    labels = vote(table, [0, 1, 2, 3], threshold=0.6, model="m").set_index("cluster_id")
    assert labels.loc[0, "label"] == "lymphocyte" and labels.loc[0, "status"] == "labelled"
    assert labels.loc[0, "agreement"] == pytest.approx(2 / 3) and labels.loc[0, "n_answers"] == 3
    assert json.loads(labels.loc[0, "votes"]) == {"lymphocyte": 2, "fibroblast": 1}
    assert labels.loc[0, "cost_usd"] == pytest.approx(0.04) and labels.loc[0, "source"] == "vlm"
    # 1:1 is below 0.6: review, with the alphabetically first of the tied labels suggested.
    assert labels.loc[1, "status"] == "review" and labels.loc[1, "suggested"] == "epithelial"
    assert labels.loc[2, "label"] == "unlabelled" and labels.loc[3, "label"] == "unlabelled"
    # The model is named, and its cost given, only where it was asked: cluster 3 had no answers.
    assert list(labels.loc[[0, 1, 2], "model"]) == ["m", "m", "m"]
    assert pd.isna(labels.loc[3, "model"]) and pd.isna(labels.loc[3, "cost_usd"])


def test_no_model_and_no_cost_when_no_representative_was_sent():
    skipped = answers([(0, None, "skipped", 0.0), (0, None, "skipped", 0.0), (1, None, "budget", 0.0)])
    labels = vote(skipped, [0, 1], threshold=0.6, model="gpt-4o")
    assert labels["model"].isna().all() and labels["cost_usd"].isna().all()
    assert (labels["label"] == "unlabelled").all()


def test_labels_file_yaml_csv_and_mistakes(tmp_path):
    yml = tmp_path / "labels.yml"
    yml.write_text("7: lymphocyte\ncluster 12: fibroblast\n'3': tumour\n")
    assert read_cluster_labels(yml) == {7: "lymphocyte", 12: "fibroblast", 3: "tumour"}
    csv = tmp_path / "sheet.csv"
    csv.write_text("cluster_id,label\n4,plasma cell\n5, macrophage\n")
    assert read_cluster_labels(csv) == {4: "plasma cell", 5: "macrophage"}
    assert read_cluster_labels(tmp_path / "none.yml") == {}
    yml.write_text("seven: lymphocyte\n")
    with pytest.raises(LabelsFileError, match=r"labels.yml: line 1: 'seven' is not a cluster number"):
        read_cluster_labels(yml)
    yml.write_text("7: \n")
    with pytest.raises(LabelsFileError, match=r"cluster\(s\) \[7\] have an empty label"):
        read_cluster_labels(yml)
    csv.write_text("cluster,name\n4,x\n")
    with pytest.raises(LabelsFileError, match="columns cluster_id,label"):
        read_cluster_labels(csv)
    yml.write_text("7: [unclosed\n")
    with pytest.raises(LabelsFileError, match="not valid YAML"):
        read_cluster_labels(yml)


def test_labels_file_with_the_other_suffix_is_read_and_named(tmp_path, caplog):
    configured = tmp_path / "cluster_labels.yml"
    configured.write_text("# Cluster names: `<cluster id>: <cell type>`\n")  # what make setup writes
    (tmp_path / "cluster_labels.yaml").write_text("7: lymphocyte\n")
    with caplog.at_level(logging.INFO):
        assert read_cluster_labels(configured) == {7: "lymphocyte"}
    assert "cluster_labels.yaml" in caplog.text and "labels_file is" in caplog.text
    configured.unlink()  # absent altogether: the .yaml is still found
    assert read_cluster_labels(configured) == {7: "lymphocyte"}
    (tmp_path / "cluster_labels.csv").write_text("cluster_id,label\n3,fibroblast\n")
    with pytest.raises(
        LabelsFileError, match=r"cluster_labels.yaml and .*cluster_labels.csv both name clusters"
    ):
        read_cluster_labels(configured)


@pytest.mark.parametrize(
    "name, text, lines",
    [
        ("l.yml", "7: lymphocyte\ncluster 7: fibroblast\n", (1, 2)),
        ("l.yml", "1: lymphocyte\n2: tumour\n1: fibroblast\n", (1, 3)),
        ("l.csv", "cluster_id,label\n4,lymphocyte\n5,tumour\ncluster 4,fibroblast\n", (2, 4)),
    ],
)
def test_a_cluster_named_twice_is_refused_with_both_lines(tmp_path, name, text, lines):
    path = tmp_path / name
    path.write_text(text)
    cluster = 4 if name.endswith("csv") else int(text[0])
    with pytest.raises(
        LabelsFileError, match=rf"cluster {cluster} is named twice, on lines {lines[0]} and {lines[1]}"
    ):
        read_cluster_labels(path)


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_a_csv_saved_by_a_spreadsheet_is_read(tmp_path, separator):
    path = tmp_path / "labels.csv"
    rows = [["Cluster_ID", "Label"], ["4", "plasma cell"], ["5", "macrophage"], ["", ""]]
    text = "\r\n".join(separator.join(row) for row in rows) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # UTF-8 with BOM, CRLF: Excel's "CSV UTF-8"
    assert read_cluster_labels(path) == {4: "plasma cell", 5: "macrophage"}


def test_labels_match_the_vocabulary_ignoring_case_and_closest_word_is_suggested(tmp_path, caplog):
    vocabulary = ["lymphocyte", "fibroblast", "plasma cell"]
    matched, outside = match_vocabulary(
        {1: "Fibroblast", 2: "lymphocite", 3: "Plasma  Cell", 4: "zebra"}, vocabulary
    )
    assert matched == {1: "fibroblast", 2: "lymphocite", 3: "plasma cell", 4: "zebra"}
    assert outside == {"lymphocite": "lymphocyte", "zebra": None}
    # Through the node's function: counts are not split, and each stray name is a warning.
    labels_file = tmp_path / "labels.yml"
    labels_file.write_text("0: Fibroblast\n1: fibroblast\n2: lymphocite\n")
    params = ClassificationParams(labels_file=str(labels_file))
    with caplog.at_level(logging.INFO):
        table = name_clusters(answers([]), [0, 1, 2], params).set_index("cluster_id")
    assert table.loc[0, "label"] == table.loc[1, "label"] == "fibroblast"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "'lymphocite'" in w and "line 3" in w and "did you mean 'lymphocyte'" in w for w in warnings
    ), warnings
    assert not any("Fibroblast" in w for w in warnings)


def test_human_labels_override_the_model():
    labels = vote(answers([(0, "lymphocyte", "ok", 0.0), (1, "x", "error", 0.0)]), [0, 1], 0.5, "m")
    merged, unknown = apply_human(labels, {1: "plasma cell", 9: "tumour"})
    merged = merged.set_index("cluster_id")
    assert merged.loc[1, "label"] == "plasma cell" and merged.loc[1, "source"] == "human"
    assert merged.loc[1, "status"] == "labelled" and merged.loc[1, "agreement"] == 1.0
    assert merged.loc[0, "source"] == "vlm" and unknown == [9]


def _clusters():
    return pd.DataFrame(
        {
            "cell_id": ["a", "b", "c", "d", "e"],
            "slide_id": ["s1", "s1", "s2", "s2", "s2"],
            "cluster_id": [0, 0, 1, 2, -1],
            "is_noise": [False, False, False, False, True],
            "confidence": [0.8, 0.4, 0.9, 0.5, 0.0],
        }
    )


def test_every_cell_gets_a_label_or_an_explicit_status():
    labels = vote(
        answers(
            [(0, "lymphocyte", "ok", 0), (0, "lymphocyte", "ok", 0), (1, "x", "ok", 0), (1, "y", "ok", 0)]
        ),
        [0, 1, 2],
        0.6,
        "m",
    )
    cells = propagate(_clusters(), labels, noise="nearest", nearest_labelled=np.array([0])).set_index(
        "cell_id"
    )
    assert list(cells["label"]) == ["lymphocyte", "lymphocyte", "review", "unlabelled", "lymphocyte"]
    assert list(cells["status"]) == ["labelled", "labelled", "review", "unlabelled", "noise_nearest"]
    assert cells.loc["a", "confidence"] == pytest.approx(0.8) and cells.loc[
        "e", "confidence"
    ] == pytest.approx(0.5)
    assert cells.loc["c", "confidence"] == 0 and cells.loc["c", "source"] == "none"
    alone = propagate(_clusters(), labels, noise="unlabelled").set_index("cell_id")
    assert alone.loc["e", "label"] == "unlabelled" and alone.loc["e", "status"] == "unlabelled"


def test_counts_per_slide_and_overall():
    cells = pd.DataFrame({"slide_id": ["s1", "s1", "s2"], "label": ["x", "y", "x"]})
    counts = count_labels(cells).set_index(["slide_id", "label"])
    assert counts.loc[("all", "x"), "cells"] == 2 and counts.loc[("s1", "y"), "fraction"] == 0.5
    assert counts.loc[("s2", "x"), "fraction"] == 1.0
    assert count_labels(cells.iloc[:0]).empty


def test_a_labels_file_keyed_to_another_clustering_is_not_applied_by_number(tmp_path, caplog):
    labels_file = tmp_path / "labels.yml"
    params = ClassificationParams(labels_file=str(labels_file))
    labels_file.write_text('clustering: "0123456789ab"\n0: lymphocyte\n1: "fibroblast"\n')
    same = name_clusters(answers([]), [0, 1], params, clustering="0123456789ab").set_index("cluster_id")
    assert list(same["label"]) == ["lymphocyte", "fibroblast"] and set(same["source"]) == {"human"}
    assert same["labels_file"].str.startswith("applied").all()
    with caplog.at_level(logging.WARNING):
        other = name_clusters(answers([]), [0, 1], params, clustering="ffffffffffff")
    assert set(other["label"]) == {"unlabelled"} and not (other["source"] == "human").any()
    assert other["labels_file"].iloc[0] == (
        "not applied: written for clustering 0123456789ab, this clustering is ffffffffffff"
    )
    assert any("not applied by number" in r.getMessage() for r in caplog.records)
    # An unkeyed file is applied, unless its very bytes were read for another clustering.
    labels_file.write_text("0: lymphocyte\n")
    from histocluster.labelling.labels_file import load_cluster_labels

    sha = load_cluster_labels(labels_file).sha256
    assert name_clusters(answers([]), [0], params, "k2").loc[0, "source"] == "human"
    assert name_clusters(answers([]), [0], params, "k2", stale_file_sha256=sha).loc[0, "source"] == "none"


def test_model_names_fill_clusters_without_a_sure_name_and_a_person_overrides_them(tmp_path):
    from histocluster.labelling.cluster_labels import apply_model_names

    table = vote(
        answers(
            [(0, "tumour", "ok", 0.0), (0, "tumour", "ok", 0.0), (1, "a", "ok", 0.0), (1, "b", "ok", 0.0)]
        ),
        [0, 1, 2],
        threshold=0.6,
        model="m",
    )
    prenamed = pd.DataFrame(
        {
            "cluster_id": [0, 1, 2],
            "label": ["lymphocyte", "fibroblast", None],
            "agreement": [0.9, 0.7, 0.4],
            "votes": [{"lymphocyte": 9}, {"fibroblast": 7}, {"x": 4}],
        }
    )
    out = apply_model_names(table, prenamed).set_index("cluster_id")
    assert out.loc[0, "label"] == "tumour" and out.loc[0, "source"] == "vlm"  # a sure VLM name stays
    assert out.loc[1, "label"] == "fibroblast" and out.loc[1, "source"] == "model"  # review → model
    assert out.loc[1, "agreement"] == 0.7
    assert out.loc[2, "label"] == "unlabelled"  # the model is not sure either


def test_naming_order_puts_big_unsure_clusters_first_and_skips_what_a_person_named():
    from histocluster.labelling.cluster_labels import naming_order

    table = pd.DataFrame(
        {
            "cluster_id": [0, 1, 2, 3, 4],
            "status": ["labelled", "unlabelled", "labelled", "review", "unlabelled"],
            "source": ["human", "none", "vlm", "vlm", "none"],
            "agreement": [1.0, 0.0, 0.9, 0.5, 0.0],
        }
    )
    sizes = pd.Series({0: 1000, 1: 50, 2: 900, 3: 300, 4: 80})
    ranked = naming_order(table, sizes).set_index("cluster_id")
    # priorities: 0 → 0 (a person's), 1 → 50, 2 → 90, 3 → 150, 4 → 80
    assert ranked["priority"].to_dict() == pytest.approx({0: 0, 1: 50, 2: 90, 3: 150, 4: 80})
    assert pd.isna(ranked.loc[0, "naming_rank"])
    assert list(ranked["naming_rank"].iloc[1:]) == [4, 2, 1, 3]
