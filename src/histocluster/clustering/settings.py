"""Parameter models of the clustering stage: no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass as settings_dataclass

from histocluster.features.settings import MorphologySettings
from histocluster.strict_model import Strict


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ReductionSettings:
    """How embeddings are reduced before clustering (and how the 2-D map is made)."""

    normalize: Literal["none", "standard", "l2"] = "none"
    method: Literal["umap", "pca", "none"] = "pca"
    n_components: int = Field(50, ge=1)
    n_neighbors: int = Field(15, ge=2)
    min_dist: float = Field(0.1, ge=0)
    metric: str = "euclidean"
    random_state: int | None = 0
    map_method: Literal["umap", "pca"] = Field("umap", description="how the 2-D cell map is made")
    map_max_cells: int = Field(
        50_000, ge=100, description="UMAP map fitted on a sample this size; the other cells placed by k-NN"
    )
    map_epochs: int | None = Field(
        None,
        ge=1,
        description="the UMAP map's optimisation epochs; null: 500 up to 10,000 cells, 100 above",
    )
    map_init: Literal["pca", "spectral"] = Field(
        "pca", description="the UMAP map's starting layout (CPU; cuML starts from its spectral layout)"
    )


_SETTINGS = ConfigDict(extra="forbid")


@settings_dataclass(frozen=True, config=_SETTINGS)
class KMeansSettings:
    n_clusters: int | Literal["auto"] = "auto"
    cells_per_cluster: int = Field(100, ge=1, description="auto: one cluster per this many cells")
    min_clusters: int = Field(2, ge=1)
    max_clusters: int = Field(100, ge=1)
    minibatch_above: int = Field(200_000, ge=1, description="MiniBatchKMeans for more cells than this")


@settings_dataclass(frozen=True, config=_SETTINGS)
class LeidenSettings:
    n_neighbors: int = Field(15, ge=1)
    resolution: float = Field(1.0, gt=0)


@settings_dataclass(frozen=True, config=_SETTINGS)
class HDBSCANSettings:
    min_cluster_size: int = Field(15, ge=2)
    min_samples: int | None = Field(None, ge=1)
    cluster_selection_method: Literal["leaf", "eom"] = "leaf"


@settings_dataclass(frozen=True, config=_SETTINGS)
class DBSCANSettings:
    eps: float | Literal["auto"] = "auto"
    min_samples: int = Field(5, ge=1)
    max_points_for_eps: int = Field(50_000, ge=100, description="cells sampled for the automatic eps")


@settings_dataclass(frozen=True, config=_SETTINGS)
class ClusterSettings:
    """What to cluster with, and how noise is treated."""

    method: Literal["kmeans", "leiden", "hdbscan", "dbscan"] = "kmeans"
    scope: Literal["global", "per_slide"] = "global"
    noise: Literal["keep", "nearest"] = "keep"
    random_state: int = 0
    kmeans: KMeansSettings = KMeansSettings()
    leiden: LeidenSettings = LeidenSettings()
    hdbscan: HDBSCANSettings = HDBSCANSettings()
    dbscan: DBSCANSettings = DBSCANSettings()


class RepresentativeParams(Strict):
    n: int = Field(10, ge=1, description="representative cells per cluster")
    pool: int = Field(5, ge=1, description="chosen among the pool × n most confident cells")
    crop_um: float = Field(32.0, gt=0, description="side of each representative's crop, µm")
    crop_size: int = Field(
        256,
        ge=32,
        description="crop side, px: read once at the slide's finest level (at most this many px), "
        "shrunk for the model and the galleries",
    )
    gallery_random: int = Field(5, ge=0, description="random members per cluster in its gallery")
    gallery_borderline: int = Field(5, ge=0, description="least confident members per cluster in its gallery")


class ClusterPlotParams(Strict):
    max_points_png: int = Field(200_000, ge=1, description="cells drawn on the static map")
    max_points_interactive: int = Field(20_000, ge=1, description="cells in the plotly map")


class ClusteringParams(Strict):
    """Parameters of the ``clustering`` pipeline."""

    device: Literal["cpu", "gpu", "auto"] = Field("cpu", description="cuML for reduction/clustering")
    standardise_within: Literal["slide", "all"] = Field(
        "slide", description="z-score features within each slide first (removes stain/scanner shifts)"
    )
    embedders: dict[Literal["morphology", "resnet50", "typenet"], float] = Field(
        {"morphology": 1.0}, min_length=1, description="embedder → weight in the combined embedding"
    )
    morphology: MorphologySettings = MorphologySettings()
    reduction: ReductionSettings = ReductionSettings()
    clusterer: ClusterSettings = ClusterSettings()
    representatives: RepresentativeParams = RepresentativeParams()
    plots: ClusterPlotParams = ClusterPlotParams()

    @model_validator(mode="after")
    def _positive_weights(self) -> ClusteringParams:
        if any(w <= 0 for w in self.embedders.values()):
            raise ValueError(f"embedder weights must be positive, got {self.embedders}")
        if {"resnet50", "typenet"} <= set(self.embedders):
            raise ValueError(
                "clustering.embedders: resnet50 and typenet cannot both be used (the segmentation "
                "pass stores one network's features: segmentation.cell_features.deep)"
            )
        return self

    @property
    def deep_embedder(self) -> str | None:
        """The network embedder in use (resnet50 or typenet), if any."""
        return next((name for name in ("resnet50", "typenet") if name in self.embedders), None)
