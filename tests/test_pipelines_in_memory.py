"""Every pipeline wired together in memory (Kedro DataCatalog of MemoryDatasets and the
SequentialRunner, no files but the slide): fast checks of the wiring and of the promise
that a kept tile is decoded once before clustering."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from histocluster.clustering.settings import ClusteringParams
from histocluster.datasets import NewestPickleDataset
from histocluster.labelling.settings import ClassificationParams
from histocluster.lazy import materialise
from histocluster.pipelines import (
    annotation,
    classification,
    clustering,
    filtering,
    segmentation,
    tiling,
)
from histocluster.reporting.settings import AnnotationParams
from histocluster.segmentation.settings import SegmentationParams
from histocluster.wsi import slides as slide_readers
from histocluster.wsi.settings import FilteringParams, TilingParams
from histocluster.wsi.slides import SlideSource

from .conftest import pink_tissue


class Kept(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test can look at every output."""

    def _release(self) -> None:
        pass


@pytest.fixture(scope="module")
def in_memory_run(tmp_path_factory):
    """The whole default pipeline on a synthetic 900 × 1200 px slide (0.5 µm/px, no µm/px
    tags: the default, not estimated), with every slide read recorded."""
    folder = tmp_path_factory.mktemp("slide")
    rgb, _ = pink_tissue((900, 1200), radius=380, seed=3)
    path = folder / "pink.png"
    Image.fromarray(rgb).save(path)
    labels_file = folder / "cluster_labels.yml"
    labels_file.write_text("0: lymphocyte\n")
    params = {
        "tiling": TilingParams(tile_size=256, overlap=32, estimate_mpp=False),  # synthetic: no estimate
        "filtering": FilteringParams(),
        "segmentation": SegmentationParams.model_validate(
            {"watershed": {"foreground": "threshold"}, "slide_store": str(folder / "slide_store")}
        ),
        "clustering": ClusteringParams.model_validate(
            {
                "reduction": {"map_method": "pca"},
                "clusterer": {"kmeans": {"cells_per_cluster": 20}},
                "representatives": {"n": 4, "crop_size": 64},
            }
        ),
        "classification": ClassificationParams(labels_file=str(labels_file), cache_dir=str(folder / "cache")),
        "annotation": AnnotationParams(),
    }
    catalog = DataCatalog(
        {
            "raw_slides": MemoryDataset([SlideSource("pink", str(path))]),
            # No earlier run: the real dataset finds no saved model and gives None.
            "previous_cell_type_model": NewestPickleDataset(filepath=str(folder / "cell_type_model.pkl")),
            **{f"params:{name}": MemoryDataset(value, copy_mode="assign") for name, value in params.items()},
        }
    )
    pipeline = (
        tiling.create_pipeline()
        + segmentation.create_pipeline()
        + filtering.create_pipeline()
        + clustering.create_pipeline()
        + classification.create_pipeline()
        + annotation.create_pipeline()
    )
    for name in pipeline.datasets():
        if name not in catalog:
            catalog[name] = Kept(copy_mode="assign")
    reads: list[tuple] = []
    originals = {}
    for cls in (slide_readers.OpenSlideReader, slide_readers.ImageReader):
        originals[cls] = cls.read_region

        def counted(reader, location, level, size, _original=originals[cls]):
            reads.append((location, level, size))
            return _original(reader, location, level, size)

        cls.read_region = counted
    try:
        SequentialRunner().run(pipeline, catalog)
    finally:
        for cls, original in originals.items():
            cls.read_region = original
    return catalog, reads


def test_every_stage_ran_and_every_cell_is_labelled(in_memory_run):
    catalog, _ = in_memory_run
    cells, clusters, cell_labels = (catalog.load(n) for n in ("cells", "clusters", "cell_labels"))
    assert len(cells) > 40 and set(clusters["cell_id"]) == set(cells["cell_id"])
    assert set(cell_labels["cell_id"]) == set(cells["cell_id"])
    assert (cell_labels.loc[cell_labels["cluster_id"] == 0, "label"] == "lymphocyte").all()
    page = catalog.load("report_html")
    for section in ("slides", "filtering", "segmentation", "clusters", "galleries", "labels"):
        assert re.search(rf"<section id=[\"']{section}[\"']>", page)
    assert "lymphocyte" in page
    assert set(catalog.load("tile_contact_sheet_figure")) == {"pink"}
    galleries = catalog.load("cluster_gallery_figure")
    assert len(galleries) == clusters["cluster_id"].nunique()


def test_each_kept_tile_is_decoded_once_before_clustering(in_memory_run):
    """Reads of a kept tile: exactly one per tile (the tile pass). The only other reads are
    the whole image once for the thumbnail (tiling; the overviews reuse it) and the
    gallery cells' small crops (the representatives the model is shown among them), once each; and the report's segmentation-check tiles,
    read again once each to be drawn at full resolution. (Overlays are drawn when saved to
    disk, which an in-memory run never does.)"""
    catalog, reads = in_memory_run
    tiles, quality = catalog.load("tiles"), catalog.load("tile_quality")
    kept = tiles.merge(quality.loc[quality["keep"], ["tile_id"]], on="tile_id")
    assert len(kept) >= 3

    def covers(read, tile) -> bool:
        (x, y), _, (w, h) = read
        ix = max(0, min(x + w, tile.x + tile.w) - max(x, tile.x))
        iy = max(0, min(y + h, tile.y + tile.h) - max(y, tile.y))
        return ix * iy >= 0.9 * tile.w * tile.h

    whole = [r for r in reads if r[2] == (1200, 900)]
    # The thumbnail, read once; this image is small (its 4 µm/px thumbnail is narrower than
    # the pictures' 800 px), so the tiling and the cell overviews each read it once more
    # at 800 px (wsi.slides.picture_thumbnail); a slide with a larger thumbnail is not reread.
    assert len(whole) == 3
    tile_reads = Counter()
    for read in reads:
        for tile in kept.itertuples():
            if read not in whole and covers(read, tile):
                tile_reads[tile.tile_id] += 1
    checked = {key.split("/", 1)[1].split("_", 2)[2] for key in catalog.load("segmentation_check_figure")}
    assert checked and checked <= set(kept["tile_id"])
    assert dict(tile_reads) == {t: 1 + (t in checked) for t in kept["tile_id"]}
    representatives, members = catalog.load("cluster_representatives"), catalog.load("gallery_members")
    assert set(representatives["cell_id"]) <= set(members["cell_id"])
    small = [r for r in reads if r[2][0] * r[2][1] < 0.25 * 256 * 256]
    assert len(small) == members["cell_id"].nunique()  # each gallery cell's crop read once, the model's too
    crops = catalog.load("representative_crops")
    assert len(crops) == len(representatives)
    # Made when saved (here: when asked for), from the pixels read above: no read more.
    assert all(np.asarray(materialise(c)).shape == (64, 64, 3) for c in crops.values())
    assert len([r for r in reads if r[2][0] * r[2][1] < 0.25 * 256 * 256]) == len(small)
