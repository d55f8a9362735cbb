"""Validated parameter models, one per pipeline (``conf/base/parameters_<name>.yml``).

Every model forbids unknown keys, so a typo such as ``tile_sise`` is an error that
names the key instead of a silently ignored setting. :func:`validate_parameters` checks
them all before a run starts (see :mod:`histocluster.hooks`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from histocluster.clustering.clusterers import ClusterSettings
from histocluster.clustering.reduction import ReductionSettings
from histocluster.errors import UserInputError
from histocluster.features.morphology import MorphologySettings
from histocluster.features.resnet import ResNetSettings
from histocluster.labelling.vlm_client import VLMSettings
from histocluster.segmentation.cellpose import CellposeSettings
from histocluster.segmentation.segmenter import make_segmenter
from histocluster.segmentation.watershed import WatershedSettings
from histocluster.wsi.tile_quality import QualityThresholds
from histocluster.wsi.tissue import TissueSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TilingParams(_Strict):
    """Parameters of the ``tiling`` pipeline."""

    target_mpp: list[float] = Field([0.5], min_length=1, description="tile resolutions, µm/px")
    tile_size: int = Field(512, gt=0, description="tile side in output pixels")
    overlap: int = Field(64, ge=0, description="overlap of neighbouring tiles, output pixels")
    default_mpp: float = Field(0.5, gt=0, description="µm/px for slides without metadata")
    min_tissue_fraction: float = Field(0.1, ge=0, le=1)
    max_tiles: int | None = Field(None, gt=0, description="per slide and resolution")
    use_regions: bool = True
    write_tile_images: bool = False
    thumbnail_mpp: float = Field(4.0, gt=0, description="µm/px of the thumbnail and tissue mask")
    thumbnail_max_side: int = Field(4096, ge=64, description="cap on the thumbnail's longer side")
    tissue: TissueSettings = TissueSettings()

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> TilingParams:
        if self.overlap >= self.tile_size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than tile_size ({self.tile_size})")
        if any(m <= 0 for m in self.target_mpp):
            raise ValueError(f"target_mpp values must be positive, got {self.target_mpp}")
        return self


class ContactSheetParams(_Strict):
    max_tiles: int = Field(24, ge=0, description="kept and rejected tiles shown, each")
    thumb_size: int = Field(160, ge=16)


class FilteringParams(_Strict):
    """Parameters of the ``filtering`` pipeline."""

    enabled: bool = True
    thresholds: QualityThresholds = QualityThresholds()
    contact_sheet: ContactSheetParams = ContactSheetParams()


class SegmentationParams(_Strict):
    """Parameters of the ``segmentation`` pipeline."""

    segmenter: Literal["watershed", "cellpose"] = Field("watershed", description="segmentation backend")
    tiles_per_batch: int = Field(8, ge=1, description="tiles segmented together (one GPU call for cellpose)")
    export_label_masks: bool = Field(False, description="also write each tile's label map (TIFF)")
    watershed: WatershedSettings = WatershedSettings()
    cellpose: CellposeSettings = CellposeSettings()

    def make_segmenter(self):
        """The configured segmenter, loaded (Cellpose reads its checkpoint here)."""
        return make_segmenter(self.segmenter, self.watershed, self.cellpose)


class EvaluationParams(_Strict):
    """Parameters of the ``evaluation`` pipeline (segmentation scored on a bench set)."""

    bench_dir: str = Field("../shared/data/bench/monuseg", description="images/, instances/, info.json")
    resolution_mpp: float | None = Field(None, gt=0, description="segment at this µm/px; null = native")


class RepresentativeParams(_Strict):
    n: int = Field(10, ge=1, description="representative cells per cluster")
    pool: int = Field(5, ge=1, description="chosen among the pool × n most confident cells")


class ClusterPlotParams(_Strict):
    max_points_png: int = Field(200_000, ge=1, description="cells drawn on the static map")
    max_points_interactive: int = Field(20_000, ge=1, description="cells in the plotly map")


class ClusteringParams(_Strict):
    """Parameters of the ``clustering`` pipeline."""

    device: Literal["cpu", "gpu", "auto"] = Field("cpu", description="cuML for reduction/clustering")
    standardise_within: Literal["slide", "all"] = Field(
        "slide", description="z-score features within each slide first (removes stain/scanner shifts)"
    )
    embedders: dict[Literal["morphology", "resnet50"], float] = Field(
        {"morphology": 1.0}, min_length=1, description="embedder → weight in the combined embedding"
    )
    morphology: MorphologySettings = MorphologySettings()
    resnet50: ResNetSettings = ResNetSettings()
    reduction: ReductionSettings = ReductionSettings()
    clusterer: ClusterSettings = ClusterSettings()
    representatives: RepresentativeParams = RepresentativeParams()
    plots: ClusterPlotParams = ClusterPlotParams()

    @model_validator(mode="after")
    def _positive_weights(self) -> ClusteringParams:
        if any(w <= 0 for w in self.embedders.values()):
            raise ValueError(f"embedder weights must be positive, got {self.embedders}")
        return self


class LabelSet(_Strict):
    """A vocabulary and the question asked about each crop."""

    labels: list[str] = Field(min_length=2)
    prompt: str = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> LabelSet:
        folded = [label.casefold() for label in self.labels]
        if len(set(folded)) != len(folded) or any(not label.strip() for label in self.labels):
            raise ValueError(f"labels must be non-empty and unique, got {self.labels}")
        return self


_HE_PROMPT = (
    "This is a crop of an H&E-stained tissue section; the cell in its centre is outlined in green. "
    "What type of cell is the outlined cell?"
)
DEFAULT_LABEL_SETS = {
    "he_general": LabelSet(
        labels=[
            "epithelial",
            "tumour",
            "lymphocyte",
            "plasma cell",
            "neutrophil",
            "eosinophil",
            "macrophage",
            "fibroblast",
            "endothelial",
            "smooth muscle",
            "necrotic",
            "other",
        ],
        prompt=_HE_PROMPT,
    ),
    "pancreatic_islet": LabelSet(
        labels=[
            "alpha cell",
            "beta cell",
            "delta cell",
            "acinar cell",
            "ductal cell",
            "endothelial cell",
            "immune cell",
            "other",
        ],
        prompt=(
            "This is a crop of a stained section of pancreas; the cell in its centre is outlined in green. "
            "What type of cell is the outlined cell?"
        ),
    ),
}


class ClassificationParams(_Strict):
    """Parameters of the ``classification`` pipeline."""

    label_set: str = Field("he_general", description="which of label_sets the model answers from")
    label_sets: dict[str, LabelSet] = Field(default_factory=lambda: dict(DEFAULT_LABEL_SETS))
    representatives: int = Field(10, ge=0, description="crops per cluster shown to the model; 0 skips it")
    crop_um: float = Field(32.0, gt=0, description="side of each crop, µm")
    image_size: int = Field(256, ge=32, description="crop side sent to the model, px")
    vlm: VLMSettings = VLMSettings()
    agreement_threshold: float = Field(0.6, ge=0, le=1, description="below: the cluster is marked for review")
    labels_file: str = Field("conf/local/cluster_labels.yml", description="a person's labels (YAML or CSV)")
    noise: Literal["nearest", "unlabelled"] = "nearest"
    cache_dir: str = Field("data/07_model_output/vlm_cache", description="answers cached on disk")

    @model_validator(mode="after")
    def _known_set(self) -> ClassificationParams:
        if self.label_set not in self.label_sets:
            raise ValueError(
                f"label_set '{self.label_set}' is not one of label_sets {sorted(self.label_sets)}"
            )
        return self

    @property
    def vocabulary(self) -> LabelSet:
        return self.label_sets[self.label_set]


class OverlayParams(_Strict):
    all_tiles: bool = Field(False, description="also one overlay per tile with cells (upstream's full set)")
    tiles_per_cluster: int = Field(2, ge=0, description="tiles holding a cluster's most confident cells")
    min_confidence: float = Field(0.1, ge=0, le=1, description="cells below are not annotated (filtered)")
    filtered: bool = Field(True, description="annotate only cells at or above min_confidence")
    boxes: bool = False
    texts: bool = True
    max_texts: int = Field(30, ge=0, description="labels written per image, most confident first")


class GalleryParams(_Strict):
    crop_um: float = Field(32.0, gt=0)
    size: int = Field(128, ge=32, description="crop side in the gallery, px")
    columns: int = Field(5, ge=1)


class AnnotationParams(_Strict):
    """Parameters of the ``annotation`` pipeline."""

    colour_by: Literal["label", "cluster"] = Field("label", description="upstream --annotation_color_by")
    overlay: OverlayParams = OverlayParams()
    gallery: GalleryParams = GalleryParams()
    overview_mpp: float = Field(4.0, gt=0, description="µm/px of the whole-slide overview")
    geojson_gzip_above: int = Field(
        50_000, ge=0, description="cells per slide above which GeoJSON is gzipped"
    )
    report_gallery_size: int = Field(80, ge=32, description="crop side in the HTML report, px")


#: Top-level parameter key → model. A new pipeline adds its model here.
PARAMETER_MODELS: dict[str, type[_Strict]] = {
    "tiling": TilingParams,
    "filtering": FilteringParams,
    "segmentation": SegmentationParams,
    "evaluation": EvaluationParams,
    "clustering": ClusteringParams,
    "classification": ClassificationParams,
    "annotation": AnnotationParams,
}


class ParameterError(UserInputError, ValueError):
    """Parameters do not fit their model; the message lists every problem."""


def _describe(error: ValidationError, section: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in (section, *item["loc"]))
        if item["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            lines.append(f"  {where}: unknown parameter (typo?)")
        else:
            lines.append(f"  {where}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse(section: str, values: Any) -> _Strict:
    """Validate one section; raises :class:`ParameterError` naming every bad key."""
    model = PARAMETER_MODELS[section]
    try:
        return model.model_validate(values if values is not None else {})
    except ValidationError as exc:
        raise ParameterError(
            f"Invalid parameters in '{section}' (conf/*/parameters_{section}.yml or --params):\n"
            + _describe(exc, section)
        ) from None


def validate_parameters(params: dict[str, Any]) -> dict[str, _Strict]:
    """Validate every known section of the run's parameters, all problems at once."""
    problems, parsed = [], {}
    for section in PARAMETER_MODELS:
        if section not in params:
            problems.append(f"Missing parameters '{section}' (conf/base/parameters_{section}.yml)")
            continue
        try:
            parsed[section] = parse(section, params[section])
        except ParameterError as exc:
            problems.append(str(exc))
    if problems:
        raise ParameterError("\n".join(problems))
    return parsed
