"""The annotation pipeline in a real Kedro run on the sample slide; the report in a real
headless Chromium."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.framework.hooks import hook_impl
from PIL import Image

from .conftest import kedro_run, load, make_project, messages
from .test_annotation import qupath_rules

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, cmu_slide, kidney_image):
    """Everything (`kedro run`) on two tiles of the sample slide and a slide without
    cells, with a person's label for cluster 0."""
    root = make_project(tmp_path_factory.mktemp("annotation") / "project", [cmu_slide, kidney_image])
    (root / "conf" / "local" / "cluster_labels.yml").write_text("0: lymphocyte\n")
    records: list[logging.LogRecord] = []
    kedro_run(
        root,
        log=records,
        hooks=(TABLE_HELD,),
        **{"tiling.max_tiles": 2, "clustering.clusterer.kmeans.cells_per_cluster": 60},
    )
    return root, records


class _TableHeld:
    """Before each node: whether the run still holds the annotated cell table."""

    def __init__(self) -> None:
        self.before: dict[str, bool] = {}

    @hook_impl
    def before_node_run(self, node, catalog) -> None:
        self.before[node.name] = catalog.exists("annotated_cells")


TABLE_HELD = _TableHeld()


def test_the_cell_table_is_released_before_the_spatialdata_export(annotated):
    """The SpatialData export (the run's last big node: every outline as a geometry) runs
    after Kedro has let go of the annotated cell table — no later node takes it."""
    held = TABLE_HELD.before
    assert held["export_qupath"] and held["draw_overlays"]  # the check sees a held table
    assert held["export_spatialdata"] is False and held["write_report"] is False


def test_qupath_geojson_per_slide(annotated):
    root, _ = annotated
    cells, cell_labels = load(root, "cells", "cell_labels")
    files = sorted((root / "data/08_reporting/qupath").iterdir())
    assert [f.name for f in files] == ["cmu-1-small-region.geojson"]  # the blank slide has no cells
    collection = json.loads(files[0].read_text())
    qupath_rules(collection)
    assert len(collection["features"]) == len(cells)
    names = [f["properties"].get("classification", {}).get("name") for f in collection["features"]]
    assert set(names) - {None} == set(cell_labels["label"]) - {"unlabelled"} and "lymphocyte" in names
    assert names.count(None) == int((cell_labels["label"] == "unlabelled").sum())  # no class, as QuPath


def test_per_cell_csv_per_slide(annotated):
    root, _ = annotated
    cells, clusters, cell_labels, slides = load(root, "cells", "clusters", "cell_labels", "slides")
    files = sorted((root / "data/08_reporting/cells_csv").iterdir())
    assert [f.name for f in files] == ["cmu-1-small-region.csv"]  # the blank slide has no cells
    table = pd.read_csv(files[0])
    assert sorted(table["cell_id"]) == sorted(cells["cell_id"]) and "polygon" not in table
    mpp = slides.set_index("slide_id").loc["cmu-1-small-region", "mpp_x"]
    merged = table.merge(cells[["cell_id", "centroid_x"]], on="cell_id").merge(
        cell_labels[["cell_id", "label"]], on="cell_id", suffixes=("", "_run")
    )
    assert np.allclose(merged["centroid_x_px"], merged["centroid_x"], rtol=1e-5)
    assert np.allclose(merged["centroid_x_um"], merged["centroid_x"] * mpp, rtol=1e-5)
    assert (merged["label"] == merged["label_run"]).all()
    by_cell = clusters.set_index("cell_id")["cluster_id"]
    assert (table.set_index("cell_id")["cluster_id"] == by_cell.loc[table["cell_id"]]).all()


def test_viewer_json_galleries_overlays_overviews_and_counts(annotated):
    root, _ = annotated
    cells, summary = load(root, "cells", "cluster_summary")
    report_dir = root / "data/08_reporting"
    viewer = json.loads((report_dir / "viewer/cmu-1-small-region.json").read_text())
    assert sum(len(t["cells"]) for t in viewer["tiles"]) == len(cells) and viewer["mpp_x"] == pytest.approx(
        0.499
    )
    galleries = sorted((report_dir / "cluster_gallery").glob("*.png"))
    assert len(galleries) == (summary["cluster_id"] >= 0).sum()
    overlays = list((report_dir / "cell_overlay").rglob("*.png"))
    # Each the 512² tile, cut where the slide ends (the kidney image is smaller than a tile).
    from histocluster.wsi.tile_grid import on_slide_size

    slides, tiles = load(root, "slides", "tiles")
    size = slides.set_index("slide_id")[["width", "height"]]
    expected = {
        t["tile_id"]: on_slide_size(t, tuple(size.loc[t["slide_id"]])) for t in tiles.to_dict("records")
    }
    shown = {p.stem.split("_", 2)[2]: Image.open(p).size for p in overlays}
    assert overlays and shown == {t: expected[t] for t in shown}
    assert (512, 512) in shown.values() and any(s != (512, 512) for s in shown.values())
    overviews = sorted(p.stem for p in (report_dir / "cell_overview").glob("*.png"))
    assert overviews == ["cmu-1-small-region", "kidney-48-5"]
    counts = json.loads((report_dir / "counts.json").read_text())
    assert counts["all"]["cells"] == len(cells) == sum(counts["all"]["labels"].values())
    assert counts["slides"]["cmu-1-small-region"]["cells"] == len(cells)
    assert counts["all"]["not_cells"] == 0  # nothing named in this run
    assert (report_dir / "label_counts.png").is_file()
    checks = sorted((report_dir / "segmentation_check" / "cmu-1-small-region").glob("*.png"))
    assert [p.name.split("_")[:2] for p in checks] == [["0", "densest"], ["1", "darkest"]]
    for path in checks:  # the tile (cut where the slide ends) twice at 2×, green outlines on the right
        image = Image.open(path).convert("RGB")
        w, h = (2 * side for side in expected[path.stem.split("_", 2)[2]])
        assert image.size == (2 * w + 8, h + 22)
        right = image.crop((w + 8, 22, 2 * w + 8, h + 22))
        left = image.crop((0, 22, w, h + 22))
        assert (0, 230, 0) in {c for _, c in right.getcolors(1 << 20)}
        assert (0, 230, 0) not in {c for _, c in left.getcolors(1 << 20)}


def test_report_has_every_section_and_says_what_is_missing(annotated):
    root, records = annotated
    page = (root / "data/08_reporting/report.html").read_text()
    for section in ("slides", "filtering", "segmentation", "clusters", "galleries", "labels"):
        assert re.search(rf"<section id=[\"']{section}[\"']>", page), section
    assert "kidney-48-5" in page and "<b>NO CELLS:</b> no tissue found" in page
    assert "segmentation check: cmu-1-small-region (2 tiles)" in page
    assert page.count("data:image/webp;base64,") >= 5
    assert "Report:" in messages(records)


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)"
)
def test_report_renders_in_headless_chromium(annotated, tmp_path):
    root, _ = annotated
    url = (root / "data/08_reporting/report.html").resolve().as_uri()
    base = [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
    ]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*base, "--window-size=1200,3000", f"--screenshot={shot}", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    # Rendered, not blank: each band of the page has content (text or pictures).
    grey = image.convert("L")
    bands = [grey.crop((0, y, 1200, y + 500)) for y in range(0, 3000, 500)]
    assert all(band.getextrema()[0] < 200 for band in bands[:4])
    # The DOM after rendering: every section, and every picture decoded (width > 0).
    # ... and the run summary embedded as JSON parses in the browser (JSON.parse).
    script = (
        "<script>window.onload=()=>{document.title=[...document.images].filter(i=>i.naturalWidth>0).length"
        "+'/'+document.images.length+'/'+JSON.parse(document.getElementById('summary').textContent).cells}</script>"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(
        (root / "data/08_reporting/report.html").read_text().replace("</body>", script + "</body>")
    )
    dom = subprocess.run(
        [*base, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for section in ("slides", "filtering", "segmentation", "clusters", "galleries", "labels"):
        assert f'id="{section}"' in dom
    decoded, total, cells = dom.split("<title>")[1].split("</title>")[0].split("/")
    assert int(total) >= 5 and decoded == total
    assert cells.replace(",", "").isdigit() and int(cells.replace(",", "")) > 0


def test_example_notebook_runs_against_the_run(annotated):
    """notebooks/explore_clusters.ipynb, executed as a user would (kernel in notebooks/)."""
    import nbformat
    from nbclient import NotebookClient

    from .conftest import ROOT

    root, _ = annotated
    notebook = nbformat.read(ROOT / "notebooks" / "explore_clusters.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # stripped
    (root / "notebooks").mkdir(exist_ok=True)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(root / "notebooks")}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the map and the gallery are shown
    assert any("cells in" in o.get("text", "") for o in outputs)


def test_overlays_of_every_tile_on_request(annotated):
    root, _ = annotated
    kedro_run(root, "annotation", **{"annotation.overlay.all_tiles": True, "annotation.colour_by": "cluster"})
    (cells,) = load(root, "cells")
    folder = root / "data/08_reporting/cell_overlay/cmu-1-small-region"
    assert {p.stem for p in folder.glob("*.png")} >= set(cells["tile_id"])


def test_results_links_the_newest_outputs(annotated):
    root, _ = annotated
    results = root / "results"
    assert (results / "report.html").resolve() == (root / "data/08_reporting/report.html").resolve()
    assert [p.name for p in (results / "qupath").iterdir()] == ["cmu-1-small-region.geojson"]
    assert [p.name for p in (results / "cells_csv").iterdir()] == ["cmu-1-small-region.csv"]
    for name in ("cells", "clusters", "cell_labels", "cluster_labels"):  # the newest versions
        assert pd.read_parquet(results / f"{name}.parquet").equals(load(root, name)[0]), name
    assert all(
        not Path(link.readlink()).is_absolute() for link in results.iterdir()
    )  # moves with the project


def test_anndata_holds_the_run_for_scanpy(annotated):
    import anndata

    from histocluster.reporting.colours import label_colours

    root, _ = annotated
    cells, clusters, cell_labels, slides, embeddings = load(
        root, "cells", "clusters", "cell_labels", "slides", "cell_embeddings"
    )
    adata = anndata.read_h5ad(root / "results" / "cells.h5ad")
    assert adata.n_obs == len(cells) and set(adata.obs_names) == set(cells["cell_id"])
    assert {"area_um2", "hematoxylin_mean"} <= set(adata.var_names) and "centroid_x" not in adata.var_names
    by_cell = cells.set_index("cell_id").loc[adata.obs_names]
    assert np.allclose(adata[:, "area_um2"].X.ravel(), by_cell["area_um2"], rtol=1e-6)
    mpp = slides.set_index("slide_id").loc["cmu-1-small-region", "mpp_x"]
    assert np.allclose(adata.obsm["spatial"], by_cell[["centroid_x", "centroid_y"]].to_numpy())
    assert np.allclose(adata.obsm["spatial_um"], by_cell[["centroid_x", "centroid_y"]].to_numpy() * mpp)
    cluster_of = clusters.set_index("cell_id")["cluster_id"].loc[adata.obs_names].astype(str)
    assert (adata.obs["cluster"].astype(str).to_numpy() == cluster_of.to_numpy()).all()
    label_of = cell_labels.set_index("cell_id")["label"].loc[adata.obs_names]
    assert (adata.obs["label"].astype(str).to_numpy() == label_of.to_numpy()).all()
    categories = list(adata.obs["label"].cat.categories)  # scanpy's colours: one per category
    expected = ["#{:02x}{:02x}{:02x}".format(*label_colours(categories)[c]) for c in categories]
    assert list(adata.uns["label_colors"]) == expected
    row = {cell_id: k for k, cell_id in enumerate(embeddings.cell_ids)}
    some = adata.obs_names[:50]
    assert np.allclose(adata[some].obsm["X_embedding"], embeddings.matrix[[row[c] for c in some]])
    assert adata.uns["slides"]["cmu-1-small-region"]["mpp_x"] == pytest.approx(mpp)


def test_spatialdata_zarr_and_a_squidpy_call(annotated):
    """cells.zarr reads back with spatialdata (every nucleus a polygon in its slide's frame,
    the AnnData annotating them, the thumbnail on the slide's pixels); the .h5ad opens in
    scanpy and squidpy's neighbourhood enrichment runs on it."""
    import scanpy
    import shapely
    import spatialdata
    import squidpy
    from spatialdata.transformations import get_transformation

    root, _ = annotated
    cells, slides = load(root, "cells", "slides")
    sdata = spatialdata.read_zarr(root / "results" / "cells.zarr")
    assert set(sdata.shapes) == {"cmu_1_small_region_nuclei"}  # the blank slide has no cells
    outlines = sdata.shapes["cmu_1_small_region_nuclei"]
    table = sdata.tables["cells"]
    assert len(outlines) == table.n_obs == len(cells)
    # Each row of the table points at its own outline.
    by_cell = cells.set_index("cell_id")
    for cell_id in table.obs_names[:: max(1, table.n_obs // 25)]:
        instance = int(table.obs.loc[cell_id, "instance_id"])
        assert table.obs.loc[cell_id, "region"] == "cmu_1_small_region_nuclei"
        polygon = shapely.from_wkb(by_cell.loc[cell_id, "polygon"])
        assert outlines.geometry.iloc[instance].equals_exact(polygon, tolerance=1e-6)
    image = sdata.images["cmu_1_small_region_thumbnail"]
    transform = get_transformation(image, to_coordinate_system="cmu_1_small_region")
    scale = dict(zip(transform.axes, transform.scale, strict=True))
    width, height = slides.set_index("slide_id").loc["cmu-1-small-region", ["width", "height"]]
    assert image.shape[1] * scale["y"] == pytest.approx(height) and image.shape[2] * scale[
        "x"
    ] == pytest.approx(width)

    adata = scanpy.read_h5ad(root / "results" / "cells.h5ad")
    squidpy.gr.spatial_neighbors_knn(adata, n_neighs=6)
    squidpy.gr.nhood_enrichment(adata, cluster_key="cluster", n_perms=20, seed=0, show_progress_bar=False)
    zscore = adata.uns["cluster_nhood_enrichment"]["zscore"]
    n = adata.obs["cluster"].nunique()
    assert zscore.shape == (n, n) and np.isfinite(zscore).any()
