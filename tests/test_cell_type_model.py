"""Names that carry over: the cell-type model trained from named clusters, applied to a slide
never clustered (real Kedro sessions on the shared slides), and its parts on arrays."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from histocluster.features.embeddings import Embeddings
from histocluster.labelling.cell_type_model import (
    CellTypeModelError,
    check_features,
    clustering_key,
    predict,
    prename_clusters,
    train,
    training_cells,
)

from .conftest import SLIDES, kedro_run, load, make_project, messages, shared_slide


def blobs(n_per: int = 200, seed: int = 0):
    """Three well separated cell types in 6 dims, and their cell ids."""
    rng = np.random.default_rng(seed)
    centres = np.array([[4, 0, 0, 0, 0, 0], [0, 4, 0, 0, 0, 0], [0, 0, 4, 0, 0, 0]], np.float32)
    x = np.concatenate([c + rng.normal(0, 1, (n_per, 6)) for c in centres]).astype(np.float32)
    types = np.repeat(["lymphocyte", "fibroblast", "tumour"], n_per)
    ids = np.array([f"c{i}" for i in range(len(x))], dtype=object)
    return Embeddings(ids, x, [f"f{k}" for k in range(6)]), types


def labelled(ids, types, cluster_of=None, confidence=1.0, status="labelled"):
    cluster_of = cluster_of if cluster_of is not None else pd.factorize(np.asarray(types))[0]
    return pd.DataFrame(
        {
            "cell_id": ids,
            "slide_id": "s",
            "cluster_id": cluster_of,
            "label": types,
            "source": "human",
            "confidence": confidence,
            "status": status,
        }
    )


def test_model_learns_the_named_types_and_labels_cells_it_never_saw():
    train_set, types = blobs(seed=0)
    examples = training_cells(labelled(train_set.cell_ids, types), pd.DataFrame({"cell_id": []}))
    model = train(train_set, examples)
    assert model.trained and model.vocabulary == ["fibroblast", "lymphocyte", "tumour"]
    assert model.summary["cells_per_type"] == {"fibroblast": 200, "lymphocyte": 200, "tumour": 200}
    new, truth = blobs(seed=1)  # other cells of the same types
    out = predict(model, new, review_below=0.5)
    assert (out["label"].to_numpy() == truth).mean() > 0.95
    assert out["probability"].between(0, 1).all()
    # A cell between two types is not forced into one: review.
    middle = Embeddings(
        np.array(["m"], dtype=object), np.array([[2, 2, 0, 0, 0, 0]], np.float32), new.columns
    )
    assert predict(model, middle, review_below=0.9)["label"].iloc[0] == "review"


def test_unlabelled_review_and_borrowed_names_do_not_teach_and_weights_follow_confidence():
    ids = np.array(["a", "b", "c", "d", "e"], dtype=object)
    table = labelled(ids, ["lymphocyte", "unlabelled", "review", "tumour", "tumour"])
    table.loc[3, "status"] = "noise_nearest"  # a noise cell that borrowed a name
    table.loc[4, "confidence"] = 0.3
    examples = training_cells(table, pd.DataFrame({"cell_id": ["e"]}), representative_weight=1.0)
    assert list(examples["cell_id"]) == ["a", "e"]
    assert examples.set_index("cell_id").loc["e", "weight"] == 1.0  # representative at full weight
    assert training_cells(table, pd.DataFrame({"cell_id": []})).set_index("cell_id").loc["e", "weight"] == 0.3


def test_fewer_than_two_names_leave_the_model_untrained_and_applying_it_is_a_clear_error():
    emb, types = blobs()
    one = training_cells(labelled(emb.cell_ids, np.full(len(types), "tumour")), pd.DataFrame({"cell_id": []}))
    model = train(emb, one)
    assert not model.trained and "two cell types" in model.summary["why_untrained"]
    with pytest.raises(CellTypeModelError, match="not trained"):
        predict(model, emb, 0.5)
    trained = train(emb, training_cells(labelled(emb.cell_ids, types), pd.DataFrame({"cell_id": []})))
    other = Embeddings(emb.cell_ids, emb.matrix[:, :5], emb.columns[:5])
    with pytest.raises(CellTypeModelError, match="expects 6 embedding columns"):
        check_features(trained, other)


def test_prenaming_names_clusters_whose_cells_agree_and_the_key_follows_membership():
    clusters = pd.DataFrame({"cell_id": list("abcdef"), "cluster_id": [0, 0, 0, 1, 1, 1], "is_noise": False})
    predictions = pd.DataFrame({"cell_id": list("abcdef"), "label": ["t", "t", "l", "t", "l", "review"]})
    named = prename_clusters(clusters, predictions, min_agreement=0.6).set_index("cluster_id")
    assert named.loc[0, "label"] == "t" and named.loc[0, "agreement"] == pytest.approx(2 / 3)
    assert named.loc[1, "label"] is None  # 1 of 3 each: no name
    assert clustering_key(clusters) == clustering_key(clusters.iloc[::-1])  # row order does not matter
    moved = clusters.assign(cluster_id=[0, 0, 1, 1, 1, 1])
    assert clustering_key(moved) != clustering_key(clusters)


# ---- real runs on the shared slides ----------------------------------------------------------


def newest(folder, name):
    """The newest saved file called ``name`` under ``folder`` (versions sort in time)."""
    return sorted(folder.rglob(name))[-1] if folder.is_dir() else folder


FAST = {"tiling.max_tiles": 3, "clustering.clusterer.kmeans.cells_per_cluster": 40}


@pytest.mark.slow
def test_names_given_on_two_slides_label_a_third_without_clustering(tmp_path, cmu_slide):
    """The shared H&E slides: CMU-1 (skin, 20×) and a MoNuSeg image (40×, µm/px from the
    slide table) are clustered and named; the TCGA slide (colon, another scanner, no µm/px)
    arrives later and is labelled by the model alone. (kidney-48-5 is IHC, no H&E nuclei.)"""
    third = shared_slide("tcga-cr-7395-01a-01-ts1.svs")
    monuseg = SLIDES.parent / "bench" / "monuseg" / "images" / "TCGA-21-5784-01Z-00-DX1.png"
    if not monuseg.is_file():
        pytest.skip(f"{monuseg} is not available")
    root = make_project(tmp_path / "project", [cmu_slide, monuseg])
    (root / "data/01_raw/slides/slides.csv").write_text(f"file,mpp\n{monuseg.name},0.2527\n")
    kedro_run(root, **FAST)
    clusters, summary = load(root, "clusters", "cluster_summary")
    trained_on = ["cmu-1-small-region", "tcga-21-5784-01z-00-dx1"]
    assert sorted(set(clusters["slide_id"])) == trained_on
    # A person names every cluster as one would by eye: big nuclei "tumour", small "lymphocyte".
    named = summary[~summary["noise"].astype(bool)]
    big = named["mean_area_um2"] > named["mean_area_um2"].median()
    names = dict(zip(named["cluster_id"], np.where(big, "tumour", "lymphocyte"), strict=True))
    ids = sorted(names)
    (root / "conf" / "local" / "cluster_labels.yml").write_text(
        "".join(f"{c}: {n}\n" for c, n in names.items())
    )
    kedro_run(root, "relabel")
    (model,) = load(root, "cell_type_model")
    assert model.trained and model.vocabulary == ["lymphocyte", "tumour"]
    assert model.summary["slides"] == trained_on
    assert model.summary["names_by_source"] == {"human": len(ids)}
    clustering_version = sorted((root / "data/05_model_input/clusters.parquet").iterdir())

    # The third slide arrives; apply the model: no clustering is fitted, nothing renamed.
    shutil.copy(third, root / "data/01_raw/slides" / third.name)
    records: list[logging.LogRecord] = []
    kedro_run(root, "apply", log=records, **{"tiling.max_tiles": 3})
    new = "tcga-cr-7395-01a-01-ts1"
    log = messages(records)
    assert "Clustered" not in log and "Placed" in log
    cells, placed, cell_labels, cluster_labels = load(
        root, "cells", "clusters", "cell_labels", "cluster_labels"
    )
    unseen = cells.loc[cells["slide_id"] == new, "cell_id"]
    assert len(unseen) > 20
    mine = cell_labels[cell_labels["cell_id"].isin(unseen)]
    assert set(mine["label"]) <= {"lymphocyte", "tumour", "review"} and (mine["label"] != "review").any()
    assert (mine["source"] == "model").all() and mine["confidence"].between(0, 1).all()
    assert ((mine["label"] == "review") == (mine["confidence"] < 0.5)).all()
    # Its cells sit in the clusters the person named (the training run's numbers).
    assert set(placed["cluster_id"]) <= set(ids)
    assert (cluster_labels["source"] == "model").all()
    assert set(cluster_labels["suggested"].dropna()) <= {"tumour", "lymphocyte"}
    # The clustering itself was not redone: no new clusters version beyond apply's own table,
    # and the first two slides' cells keep the names they were given (the model agrees).
    assert (
        len(sorted((root / "data/05_model_input/clusters.parquet").iterdir())) == len(clustering_version) + 1
    )
    first_two = cell_labels[~cell_labels["cell_id"].isin(unseen)].merge(
        clusters[["cell_id", "cluster_id"]], on="cell_id", suffixes=("", "_trained")
    )
    given = first_two["cluster_id_trained"].map(names)
    agree = (first_two["label"] == given)[first_two["label"] != "review"].mean()
    assert agree > 0.8

    # The third slide's labels reach its GeoJSON, the counts and the report.
    geojson = newest(root / "data/08_reporting/qupath", f"{new}.geojson")
    features = json.loads(geojson.read_text())["features"]
    classes = {f["properties"].get("classification", {}).get("name") for f in features}
    assert classes - {None} <= {"lymphocyte", "tumour", "review"} and classes & {"lymphocyte", "tumour"}
    counts = json.loads(newest(root / "data/08_reporting/counts.json", "counts.json").read_text())
    assert set(counts["slides"][new]["labels"]) == set(mine["label"])
    report = newest(root / "data/08_reporting/report.html", "report.html").read_text()
    assert new in report and "cell-type model" in report


def _newest_report(root):
    return newest(root / "data/08_reporting/report.html", "report.html")


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)"
)
def test_workbench_round_trip_in_headless_chromium(tmp_path, cmu_slide):
    """Fill names in the report, download the labels file, apply it with the one command the
    page names, and find the names in the outputs; the page shows them on its next run."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    root = make_project(tmp_path / "project", [cmu_slide])
    kedro_run(root, **FAST)
    clusters, cluster_labels = load(root, "clusters", "cluster_labels")
    key = clustering_key(clusters)
    sizes = clusters.groupby("cluster_id").size()
    report = _newest_report(root)
    odd = 'keratin "flake": odd # not a comment'
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(report.as_uri())
        fields = page.locator("input.cluster-name")
        order = [int(v) for v in fields.evaluate_all("els => els.map(e => e.dataset.cluster)")]
        assert sorted(order) == sorted(sizes.index)
        # Nothing is named yet: the cards come largest first (doubt 1 for every cluster).
        assert [sizes[c] for c in order] == sorted(sizes, reverse=True)
        assert page.locator("#apply-command").inner_text() == "kedro run --pipelines=relabel"
        assert page.locator("#labels-path").inner_text() == "conf/local/cluster_labels.yml"
        suggestions = page.locator("#vocabulary option").evaluate_all("els => els.map(e => e.value)")
        assert "lymphocyte" in suggestions and "fibroblast" in suggestions
        first, second = order[0], order[1]
        page.fill(f"input.cluster-name[data-cluster='{first}']", "lymphocyte")
        page.fill(f"input.cluster-name[data-cluster='{second}']", odd)
        with page.expect_download() as download:
            page.click("#download-labels")
        assert download.value.suggested_filename == "cluster_labels.yml"
        download.value.save_as(root / "conf/local/cluster_labels.yml")
        browser.close()
    text = (root / "conf/local/cluster_labels.yml").read_text()
    assert f'clustering: "{key}"' in text and text.count(":") >= 3
    kedro_run(root, "relabel")
    cluster_labels, cell_labels = load(root, "cluster_labels", "cell_labels")
    by_id = cluster_labels.set_index("cluster_id")
    assert by_id.loc[first, "label"] == "lymphocyte" and by_id.loc[first, "source"] == "human"
    assert by_id.loc[second, "label"] == odd and by_id.loc[second, "labels_file"].startswith("applied")
    assert (cell_labels.loc[cell_labels["cluster_id"] == first, "label"] == "lymphocyte").all()
    geojson = newest(root / "data/08_reporting/qupath", "cmu-1-small-region.geojson")
    classes = {
        f["properties"].get("classification", {}).get("name")
        for f in json.loads(geojson.read_text())["features"]
    }
    assert {"lymphocyte", odd} <= classes
    # The next report shows the names in their fields, and those clusters are no longer ranked.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(_newest_report(root).as_uri())
        assert page.input_value(f"input.cluster-name[data-cluster='{second}']") == odd
        assert page.locator(f"#cluster-{first} .rank").count() == 0
        assert page.locator(f"#cluster-{order[2]} .rank").inner_text() == "name next: #1"
        browser.close()


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)"
)
def test_the_type_networks_suggestions_fill_the_workbench_and_reach_the_outputs(tmp_path, cmu_slide):
    """With ``deep: typenet`` each card says which type the network gave most of the
    cluster's cells; the button fills the empty names with them (in the vocabulary's
    spelling), a person corrects one, and ``relabel`` applies what was downloaded."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    root = make_project(tmp_path / "project", [cmu_slide])
    typenet = {
        "segmentation.cell_features.deep": "typenet",
        "segmentation.cell_features.typenet.rotations": 1,
        "clustering.embedders": {"morphology": 1.0, "typenet": 1.0},
    }
    kedro_run(root, **FAST, **typenet)
    clusters, summary, deep = load(root, "clusters", "cluster_summary", "cell_deep_features")
    # The suggestion, worked out here from the stored features: each cell's type of highest
    # log-probability, the type most cells of the cluster got.
    at = [k for k, c in enumerate(deep.columns) if c.startswith("typenet:logp_")]
    types = np.array([deep.columns[k].removeprefix("typenet:logp_") for k in at])
    own = pd.DataFrame({"cell_id": deep.cell_ids, "type": types[np.asarray(deep.matrix)[:, at].argmax(1)]})
    members = clusters[clusters["cluster_id"] >= 0].merge(own, on="cell_id")
    expected = members.groupby("cluster_id")["type"].agg(lambda t: t.value_counts().sort_index().idxmax())
    named = summary[~summary["noise"].astype(bool)].set_index("cluster_id")
    assert named["network_type"].to_dict() == expected.to_dict()
    spelled = {c: "other" if t == "others" else t for c, t in expected.items()}  # the vocabulary's "other"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(_newest_report(root).as_uri())
        for cluster_id, word in spelled.items():
            assert page.locator(f"#cluster-{cluster_id} .network-type").inner_text() == word
        assert all(
            v == "" for v in page.locator("input.cluster-name").evaluate_all("els => els.map(e => e.value)")
        )
        page.click("#fill-network")
        filled = {
            int(k): v
            for k, v in page.locator("input.cluster-name").evaluate_all(
                "els => els.map(e => [e.dataset.cluster, e.value])"
            )
        }
        assert filled == spelled
        corrected = min(spelled)
        page.fill(f"input.cluster-name[data-cluster='{corrected}']", "lymphocyte")
        with page.expect_download() as download:
            page.click("#download-labels")
        download.value.save_as(root / "conf/local/cluster_labels.yml")
        browser.close()
    kedro_run(root, "relabel", **typenet)
    cluster_labels, cell_labels = load(root, "cluster_labels", "cell_labels")
    by_id = cluster_labels.set_index("cluster_id")
    assert by_id.loc[corrected, "label"] == "lymphocyte"
    assert {c: by_id.loc[c, "label"] for c in spelled if c != corrected} == {
        c: w for c, w in spelled.items() if c != corrected
    }
    assert (by_id["source"] == "human").all()
    assert set(cell_labels.loc[cell_labels["cluster_id"] == corrected, "label"]) == {"lymphocyte"}


@pytest.mark.slow
def test_names_survive_reclustering_and_a_stale_file_is_not_applied_by_number(tmp_path, cmu_slide):
    root = make_project(tmp_path / "project", [cmu_slide])
    kedro_run(root, **FAST)
    clusters, summary = load(root, "clusters", "cluster_summary")
    named = summary[~summary["noise"].astype(bool)]
    big = named["mean_area_um2"] > named["mean_area_um2"].median()
    names = dict(zip(named["cluster_id"], np.where(big, "tumour", "lymphocyte"), strict=True))
    labels_file = root / "conf/local/cluster_labels.yml"
    # Written by hand, without the clustering key, as the README's first loop shows.
    labels_file.write_text("".join(f"{c}: {n}\n" for c, n in names.items()))
    kedro_run(root, "relabel")
    (model,) = load(root, "cell_type_model")
    assert model.summary["clustering"] == clustering_key(clusters) and model.summary["labels_file_sha256"]
    # Re-cluster with other parameters: other clusters, other numbers.
    records: list[logging.LogRecord] = []
    kedro_run(root, "clustering", **{**FAST, "clustering.clusterer.kmeans.cells_per_cluster": 25})
    kedro_run(root, "classification", log=records)
    new_clusters, cluster_labels = load(root, "clusters", "cluster_labels")
    assert clustering_key(new_clusters) != clustering_key(clusters)
    log = messages(records)
    # The unchanged file is recognised as written for the earlier clustering.
    assert "names are not applied by number" in log and "named clusters of this one" in log
    assert cluster_labels["labels_file"].str.startswith("not applied").all()
    assert not (cluster_labels["source"] == "human").any()
    # The model names the new clusters whose cells it agrees on, as they were named before.
    prenamed = cluster_labels[cluster_labels["source"] == "model"]
    assert len(prenamed) >= 0.5 * len(cluster_labels)
    old = clusters[["cell_id", "cluster_id"]].assign(before=lambda t: t["cluster_id"].map(names))
    members = new_clusters.merge(old[["cell_id", "before"]], on="cell_id")
    expected = members.groupby("cluster_id")["before"].agg(lambda b: b.mode().iloc[0])
    same = (prenamed.set_index("cluster_id")["label"] == expected.reindex(prenamed["cluster_id"])).mean()
    assert same > 0.8
    # The report lists what changed: the clusters the model named, and the file not applied.
    page = newest(root / "data/08_reporting/report.html", "report.html")
    kedro_run(root, "annotation")
    page = page.read_text()
    assert f"What changed: {len(prenamed)} cluster(s)" in page and "not applied: written for" in page
