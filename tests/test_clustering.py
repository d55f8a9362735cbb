"""Clustering, confidence, representatives and summary, on hand-made data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from histocluster.clustering.clusterers import (
    NOISE,
    auto_clusters,
    centre_margin,
    cluster_cells,
    kdistance_elbow,
)
from histocluster.clustering.compute_backend import BackendError, cuml_problem, use_gpu
from histocluster.clustering.settings import (
    ClusterSettings,
    DBSCANSettings,
    HDBSCANSettings,
    KMeansSettings,
    LeidenSettings,
)
from histocluster.clustering.summary import pick_representatives, summarise


def blobs(n_per: int = 60, centres=((0, 0), (20, 0), (0, 20)), spread: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(c, spread, (n_per, 2)) for c in centres]).astype(np.float32)
    truth = np.repeat(np.arange(len(centres)), n_per)
    return x, truth


def one_slide(n: int) -> np.ndarray:
    return np.array(["s"] * n, dtype=object)


def test_kdistance_elbow_is_the_end_of_the_flat_part():
    # 100 points 1 apart on a line (distance to the 2nd point counting itself: 1) and 5
    # outliers 100 apart: the sorted curve is flat at 1 then jumps; the elbow is 1.
    line = np.arange(100, dtype=np.float32)
    outliers = 1000 + 100 * np.arange(5, dtype=np.float32)
    x = np.concatenate([line, outliers])[:, None]
    assert kdistance_elbow(x, k=2) == pytest.approx(1.0)
    s = ClusterSettings(method="dbscan", dbscan=DBSCANSettings(min_samples=2))
    result = cluster_cells(x, one_slide(len(x)), s)
    assert (result.labels[:100] == 0).all()
    assert (result.labels[100:] == NOISE).all() and result.is_noise[100:].all()
    assert (result.confidence[100:] == 0).all()


def test_confidence_by_hand_and_scale_free():
    # Centres 0 and 10 on a line: a cell at 2 of cluster 0 has d1 = 2, d2 = 8 → 6/10.
    x = np.array([[-1.0], [1.0], [2.0], [9.0], [11.0]])
    labels = np.array([0, 0, 0, 1, 1])
    ids, centres = np.array([0, 1]), np.array([[0.0], [10.0]])
    confidence = centre_margin(x, labels, ids, centres)
    assert confidence[2] == pytest.approx(0.6)
    assert confidence[0] == pytest.approx((11 - 1) / 12)
    assert np.allclose(centre_margin(1000 * x, labels, ids, 1000 * centres), confidence)
    # Whole clustering: multiplying every coordinate leaves the confidence unchanged.
    blob_x, _ = blobs()
    s = ClusterSettings(kmeans=KMeansSettings(n_clusters=3))
    small = cluster_cells(blob_x, one_slide(len(blob_x)), s)
    large = cluster_cells(blob_x * 1e4, one_slide(len(blob_x)), s)
    assert np.allclose(small.confidence, large.confidence, atol=1e-5)
    assert ((small.confidence >= 0) & (small.confidence <= 1)).all()


def test_auto_number_of_kmeans_clusters():
    s = KMeansSettings()
    assert auto_clusters(1500, s) == 15  # one per 100 cells
    assert auto_clusters(50, s) == 2  # at least min_clusters
    assert auto_clusters(1_000_000, s) == 100  # at most max_clusters
    assert auto_clusters(1, s) == 1  # never more clusters than cells
    assert auto_clusters(30, KMeansSettings(n_clusters=7)) == 7


@pytest.mark.parametrize(
    "settings",
    [
        ClusterSettings(kmeans=KMeansSettings(n_clusters=3)),
        ClusterSettings(method="hdbscan", hdbscan=HDBSCANSettings(cluster_selection_method="eom")),
        ClusterSettings(method="dbscan"),
    ],
    ids=["kmeans", "hdbscan", "dbscan"],
)
def test_separated_blobs_are_found(settings):
    x, truth = blobs()
    result = cluster_cells(x, one_slide(len(x)), settings)
    kept = ~result.is_noise
    assert kept.mean() > 0.9
    assert adjusted_rand_score(truth[kept], result.labels[kept]) == pytest.approx(1.0)


def test_leiden_over_clusters_but_never_mixes_blobs():
    x, truth = blobs(n_per=150)
    result = cluster_cells(
        x, one_slide(len(x)), ClusterSettings(method="leiden", leiden=LeidenSettings(resolution=1))
    )
    assert len(np.unique(result.labels)) >= 3
    for c in np.unique(result.labels):
        assert len(np.unique(truth[result.labels == c])) == 1  # every community within one blob


def test_clusters_are_numbered_from_the_largest():
    x, _ = blobs(n_per=10)
    x = np.vstack([x[:10], np.repeat(x[10:20], 3, axis=0), x[20:]])  # blob 1 three times larger
    result = cluster_cells(x, one_slide(len(x)), ClusterSettings(kmeans=KMeansSettings(n_clusters=3)))
    sizes = np.bincount(result.labels)
    assert list(sizes) == sorted(sizes, reverse=True) and sizes[0] == 30


def test_per_slide_clusters_never_span_slides():
    x, _ = blobs(n_per=40)
    x = np.vstack([x, x + 0.01])  # the same cells on two slides
    slides = np.array(["a"] * 120 + ["b"] * 120, dtype=object)
    s = ClusterSettings(scope="per_slide", kmeans=KMeansSettings(n_clusters=3))
    result = cluster_cells(x, slides, s)
    assert len(np.unique(result.labels)) == 6
    for c in np.unique(result.labels):
        assert len(np.unique(slides[result.labels == c])) == 1
    glob = cluster_cells(x, slides, ClusterSettings(kmeans=KMeansSettings(n_clusters=3)))
    assert len(np.unique(glob.labels)) == 3  # global: one cluster holds both slides' copies


def test_noise_can_join_the_nearest_cluster():
    x, _ = blobs()
    x = np.vstack([x, [[30.0, 0.0], [0.0, -12.0]]])  # two stragglers
    s = ClusterSettings(method="dbscan", dbscan=DBSCANSettings(eps=3.0))
    kept = cluster_cells(x, one_slide(len(x)), s)
    assert kept.is_noise[-2:].all() and (kept.labels[-2:] == NOISE).all()
    joined = cluster_cells(
        x, one_slide(len(x)), ClusterSettings(method="dbscan", noise="nearest", dbscan=s.dbscan)
    )
    assert joined.is_noise[-2:].all()  # still flagged
    assert joined.labels[-2] == joined.labels[61]  # (30, 0) joins the blob at (20, 0)
    assert joined.labels[-1] == joined.labels[0]  # (0, -12) joins the blob at (0, 0)
    assert (joined.confidence[-2:] == 0).all()


def test_fitted_model_places_new_cells():
    x, _ = blobs()
    result = cluster_cells(x, one_slide(len(x)), ClusterSettings(kmeans=KMeansSettings(n_clusters=3)))
    new = np.array([[0.2, 0.1], [19.5, 0.3], [0.1, 20.4]], np.float32)
    labels, confidence = result.model.predict(new)
    assert list(labels) == [result.labels[0], result.labels[60], result.labels[120]]
    assert (confidence > 0.8).all()


@pytest.mark.parametrize("method", ["kmeans", "leiden", "hdbscan", "dbscan"])
def test_degenerate_inputs_end_with_a_message_not_a_traceback(method):
    s = ClusterSettings(method=method)
    empty = cluster_cells(np.zeros((0, 4)), one_slide(0), s)
    assert len(empty.labels) == 0 and "no cells" in " ".join(empty.messages)
    single = cluster_cells(np.ones((1, 4)), one_slide(1), s)
    assert len(single.labels) == 1
    constant = cluster_cells(np.ones((50, 4)), one_slide(50), s)
    assert "same features" in " ".join(constant.messages)
    assert len(np.unique(constant.labels)) == 1 and not constant.is_noise.any()
    few = cluster_cells(np.random.default_rng(0).normal(size=(3, 4)), one_slide(3), s)
    assert len(few.labels) == 3 and np.isfinite(few.confidence).all()
    if method == "dbscan":
        assert few.is_noise.all() and "fewer than dbscan.min_samples" in " ".join(few.messages)


def test_all_noise_is_said():
    x, _ = blobs()
    s = ClusterSettings(method="dbscan", dbscan=DBSCANSettings(eps=1e-6))
    result = cluster_cells(x, one_slide(len(x)), s)
    assert result.is_noise.all()
    assert "all 180 cells are noise" in " ".join(result.messages)
    assert result.model.predict(x[:2])[0].tolist() == [NOISE, NOISE]


def test_gpu_request_without_cuml_is_a_clear_error():
    if cuml_problem() is None:
        pytest.skip("cuML works here")
    with pytest.raises(BackendError, match="clustering.device is 'gpu'"):
        use_gpu("gpu", "UMAP")
    assert use_gpu("auto", "UMAP") is False


def _clusters_table() -> pd.DataFrame:
    # Cluster 0: 12 cells, the 6 most confident all in tile a1 of slide a.
    rows = [("a", "a1", 0.99 - 0.01 * k) for k in range(6)]
    rows += [
        ("a", "a2", 0.80),
        ("b", "b1", 0.70),
        ("b", "b2", 0.60),
        ("b", "b1", 0.5),
        ("a", "a1", 0.1),
        ("c", "c1", 0.05),
    ]
    frame = pd.DataFrame(rows, columns=["slide_id", "tile_id", "confidence"])
    frame["cluster_id"] = 0
    frame["cell_id"] = [f"cell{k:02d}" for k in range(len(frame))]
    noise = pd.DataFrame(
        {"slide_id": ["a"], "tile_id": ["a1"], "confidence": [0.0], "cluster_id": [NOISE], "cell_id": ["n"]}
    )
    return pd.concat([frame, noise], ignore_index=True).assign(
        map_x=0.0, map_y=0.0, is_noise=lambda f: f.cluster_id < 0
    )


def test_representatives_are_confident_and_spread_across_slides_and_tiles():
    reps = pick_representatives(_clusters_table(), n=4, pool=3)
    assert list(reps["cluster_id"].unique()) == [0]  # noise has no representatives
    # First the best cell; then the best of an unused slide (b: b1 0.70); then a new
    # slide again if any among the 12 candidates (c1); then slide a's second tile.
    assert list(reps["cell_id"]) == ["cell00", "cell07", "cell11", "cell06"]
    assert list(reps["rank"]) == [0, 1, 2, 3]


def test_summary_counts_slides_and_lists_representatives():
    clusters = _clusters_table()
    cells = clusters[["cell_id"]].assign(
        area_um2=np.arange(len(clusters), dtype=float),
        perimeter_um=1.0,
        eccentricity=0.5,
        solidity=0.9,
        circularity=0.8,
        major_axis_um=5.0,
        minor_axis_um=4.0,
        hematoxylin_mean=0.3,
        hematoxylin_std=0.1,
        eosin_mean=0.2,
        eosin_std=0.05,
    )
    reps = pick_representatives(clusters, n=2)
    summary = summarise(cells, clusters, reps).set_index("cluster_id")
    assert summary.loc[0, "size"] == 12 and summary.loc[NOISE, "size"] == 1
    assert bool(summary.loc[NOISE, "noise"]) and not bool(summary.loc[0, "noise"])
    assert json.loads(summary.loc[0, "slide_counts"]) == {"a": 8, "b": 3, "c": 1}
    assert summary.loc[0, "n_slides"] == 3
    assert summary.loc[0, "mean_area_um2"] == pytest.approx(np.mean(np.arange(12)))
    assert list(summary.loc[0, "representatives"]) == ["cell00", "cell07"]
    assert summary["fraction"].sum() == pytest.approx(1.0)


@pytest.mark.slow
def test_large_maps_are_fitted_on_a_sample_and_the_rest_placed():
    from histocluster.clustering.reduction import cell_map
    from histocluster.clustering.settings import ReductionSettings

    x, truth = blobs(n_per=100, centres=((0, 0), (30, 0), (0, 30)))
    x = np.column_stack([x, np.random.default_rng(1).normal(size=len(x))]).astype(np.float32)  # 3-d
    reducer, coords = cell_map(x, ReductionSettings(map_method="umap", map_max_cells=120, n_neighbors=10))
    assert coords.shape == (300, 2) and np.isfinite(coords).all()
    # Cells placed by neighbours land with their own blob: each blob's cells are closer to
    # their blob's centre on the map than to the other blobs' centres.
    centres = np.array([coords[truth == k].mean(axis=0) for k in range(3)])
    nearest = np.argmin(((coords[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == truth).mean() > 0.95
    # New cells are placed the same way: next to their blob.
    new = np.array([[0.5, 0.2, 0.0], [29.5, 0.4, 0.1]], np.float32)
    placed = reducer.transform(new)
    assert list(np.argmin(((placed[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)) == [0, 1]


def test_exact_neighbours_list_each_row_first_and_match_brute_force():
    from histocluster.clustering.reduction import exact_neighbours

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    x[10] = x[11] = x[12]  # exact duplicates: any of them may come back first
    indices, distances = exact_neighbours(x, 6)
    assert (indices[:, 0] == np.arange(200)).all() and (distances[:, 0] == 0).all()
    brute = np.sqrt(((x[:, None, :] - x[None]) ** 2).sum(-1))
    for row in (0, 10, 11, 12, 150):
        others = np.sort(np.delete(brute[row], row))[:5]
        np.testing.assert_allclose(np.sort(distances[row, 1:]), others, atol=1e-5)
    assert {int(i) for i in indices[10, :3]} == {10, 11, 12}


@pytest.mark.slow
def test_the_cell_map_takes_its_neighbour_graph_from_scikit_learn_not_pynndescent(monkeypatch):
    """pynndescent's numba code compiles afresh in every process (~35 s): the map must not
    call it (its graph is exact, from scikit-learn); the reduction, whose model places new
    cells later, still may."""
    import pynndescent

    from histocluster.clustering.reduction import cell_map
    from histocluster.clustering.settings import ReductionSettings

    def refuse(*args, **kwargs):
        raise AssertionError("pynndescent was called for the cell map")

    monkeypatch.setattr(pynndescent.NNDescent, "__init__", refuse)  # the class umap-learn uses
    x, truth = blobs(n_per=2000, centres=((0, 0), (30, 0), (0, 30)))  # above UMAP's own exact limit (4,096)
    x = np.column_stack([x, np.random.default_rng(1).normal(size=(len(x), 3))]).astype(np.float32)
    _, coords = cell_map(x, ReductionSettings(map_method="umap", n_neighbors=10))
    centres = np.array([coords[truth == k].mean(axis=0) for k in range(3)])
    nearest = np.argmin(((coords[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == truth).mean() > 0.99


def test_gallery_shows_typical_random_and_borderline_cells_from_every_slide():
    from histocluster.clustering.summary import pick_gallery_members

    clusters = _clusters_table()
    reps = pick_representatives(clusters, n=2, pool=3)
    members = pick_gallery_members(clusters, reps, n_random=3, n_borderline=3, crop_um=32.0, seed=1)
    assert list(members["cluster_id"].unique()) == [0]  # noise has no gallery
    kinds = members.groupby("kind", sort=False)["cell_id"].agg(list)
    assert list(kinds.index) == ["typical", "random", "borderline"]
    assert kinds["typical"] == list(reps["cell_id"])
    assert members["cell_id"].is_unique  # no cell shown twice
    # Three random members from three slides: each slide the cluster spans before a repeat.
    by_cell = clusters.set_index("cell_id")["slide_id"]
    assert sorted(by_cell[kinds["random"]]) == ["a", "b", "c"]
    # Borderline: the least confident of the rest, one slide at a time.
    rest = clusters[(clusters.cluster_id == 0) & ~clusters.cell_id.isin(kinds["typical"] + kinds["random"])]
    weakest_per_slide = rest.sort_values("confidence").groupby("slide_id")["cell_id"].first()
    assert set(kinds["borderline"]) >= set(weakest_per_slide) - set(kinds["random"])
    assert (members["crop_um"] == 32.0).all()


def test_gallery_crops_are_read_at_the_slides_finest_level(tmp_path):
    """A slide scanned at 0.25 µm/px tiled at 0.5: the model's old crop of 16 µm would be 32
    tile pixels; the gallery reads 64 level-0 pixels and draws the outline after resizing."""
    import shapely
    from PIL import Image

    from histocluster.features.cell_pixels import cell_crops_by_id

    from .conftest import tile_record

    rgb = np.full((400, 400, 3), 230, np.uint8)
    rgb[180:220, 180:220] = (80, 40, 120)  # one nucleus, 10 µm wide at 0.25 µm/px
    path = tmp_path / "slide.png"
    Image.fromarray(rgb).save(path)
    slides = pd.DataFrame({"slide_id": ["s"], "path": [str(path)]})
    tiles = pd.DataFrame([tile_record(200, 0.5, scale=2)])
    cells = pd.DataFrame(
        {
            "cell_id": ["c"],
            "slide_id": ["s"],
            "tile_id": ["t"],
            "centroid_x": [200.0],
            "centroid_y": [200.0],
            "polygon": [shapely.to_wkb(shapely.box(180, 180, 220, 220))],
        }
    )
    tile_res = cell_crops_by_id(slides, tiles, cells, 16.0, size=None)["c"]
    finest = cell_crops_by_id(slides, tiles, cells, 16.0, size=None, finest=True, max_px=256)["c"]
    capped = cell_crops_by_id(slides, tiles, cells, 16.0, size=None, finest=True, max_px=40)["c"]
    assert tile_res.shape == (32, 32, 3) and finest.shape == (64, 64, 3) and capped.shape == (40, 40, 3)
    # The nucleus fills the middle 40 of the 64 level-0 pixels; the outline (green) is on its edge.
    green = (finest[..., 1] > 200) & (finest[..., 0] < 100)
    assert green.any() and not green[30:34, 30:34].any()


def test_lazy_gallery_crops_hold_only_the_pixels_read_and_make_the_same_crops(tmp_path, monkeypatch):
    """``lazy``: the cells are read at once (a read each), but each value is a function that
    makes the crop later, without reading again, equal to the crop made at once."""
    import shapely
    from PIL import Image

    from histocluster.features.cell_pixels import cell_crops_by_id
    from histocluster.wsi import slides as slide_readers

    from .conftest import tile_record

    rgb = np.full((400, 400, 3), 230, np.uint8)
    rgb[180:220, 180:220] = (80, 40, 120)
    rgb[60:90, 300:340] = (90, 50, 130)
    path = tmp_path / "slide.png"
    Image.fromarray(rgb).save(path)
    slides = pd.DataFrame({"slide_id": ["s"], "path": [str(path)]})
    tiles = pd.DataFrame([tile_record(200, 0.5, scale=2)])
    cells = pd.DataFrame(
        {
            "cell_id": ["c", "d"],
            "slide_id": ["s", "s"],
            "tile_id": ["t", "t"],
            "centroid_x": [200.0, 320.0],
            "centroid_y": [200.0, 75.0],
            "polygon": shapely.to_wkb([shapely.box(180, 180, 220, 220), shapely.box(300, 60, 340, 90)]),
        }
    )
    args = dict(size=128, finest=True, max_px=128, outline_width=2, smooth_enlarge=True)
    now = cell_crops_by_id(slides, tiles, cells, 16.0, **args)
    reads = []
    real = slide_readers.ImageReader.read_region  # a PNG slide

    def counted(reader, *a, **k):
        reads.append(a)
        return real(reader, *a, **k)

    monkeypatch.setattr(slide_readers.ImageReader, "read_region", counted)
    later = cell_crops_by_id(slides, tiles, cells, 16.0, lazy=True, **args)
    read_then = len(reads)
    made = {cell_id: make() for cell_id, make in later.items()}
    assert read_then == 2 and len(reads) == 2  # read when asked for, not when made
    assert set(made) == {"c", "d"}
    for cell_id in made:
        assert made[cell_id].shape == (128, 128, 3) and np.array_equal(made[cell_id], now[cell_id])
