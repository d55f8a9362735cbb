"""Parameter models of the segmentation stage: no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from histocluster.features.settings import CellFeatureSettings
from histocluster.strict_model import Strict


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WatershedSettings:
    """Knobs of :func:`segment_nuclei`, physical units."""

    foreground: Literal["network", "threshold"] = "network"
    weights_path: str | None = Field(
        None,
        description="nuclei network: a torch checkpoint (.pt) or its ONNX export (.onnx); None = shipped",
    )
    runtime: Literal["auto", "onnxruntime", "torch"] = Field(
        "auto", description="network runtime: auto = torch where installed, else onnxruntime"
    )
    foreground_probability: float = Field(0.6, gt=0, lt=1)
    interior_smoothing_um: float = Field(0.5, ge=0)
    min_object_probability: float = Field(
        0.0, ge=0, lt=1, description="network: drop nuclei whose mean nucleus probability is lower"
    )
    smoothing_um: float = Field(0.5, ge=0)
    threshold_scale: float = Field(1.0, gt=0)
    min_threshold: float = Field(0.05, ge=0)
    min_area_um2: float = Field(10.0, ge=0)
    max_area_um2: float = Field(400.0, gt=0)
    max_hole_um2: float = Field(15.0, ge=0)
    min_distance_um: float = Field(2.5, gt=0)
    marker_h_um: float = Field(0.3, ge=0)
    intensity_weight: float = Field(0.0, ge=0)
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="network arithmetic in torch: auto = bfloat16 where the CPU has AMX/AVX512-BF16"
    )


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CellposeSettings:
    """Knobs of Cellpose-SAM (upstream defaults), sizes in µm."""

    pretrained_model: str = Field("cpsam", description="model name or path to a cellpose 4 checkpoint")
    diameter_um: float | None = Field(None, gt=0, description="typical cell diameter; None = model's own")
    flow_threshold: float = Field(0.4, ge=0)
    cellprob_threshold: float = 0.0
    normalize: bool = True
    resample: bool = True
    min_size_um2: float = Field(4.0, ge=0)
    batch_size: int = Field(8, ge=1, description="256² patches per forward pass")
    gpu: bool = Field(True, description="use CUDA when available")
    bfloat16: bool = Field(True, description="bfloat16 weights on GPU (always float32 on CPU)")
    allow_download: bool = Field(True, description="let cellpose download a named model")


class PlausibleRanges(Strict):
    """What a slide's cells usually look like at the right scale (the slide checks)."""

    cells_per_mm2: tuple[float, float] = Field(
        (150.0, 30_000.0), description="nuclei per mm² of kept tissue, usual range"
    )
    median_area_um2: tuple[float, float] = Field((14.0, 150.0), description="median nucleus area, µm²")
    max_mpp: float = Field(2.0, gt=0, description="coarser than this, nuclei cannot be found")

    @model_validator(mode="after")
    def _ordered(self) -> PlausibleRanges:
        for name in ("cells_per_mm2", "median_area_um2"):
            low, high = getattr(self, name)
            if not 0 <= low < high:
                raise ValueError(f"{name}: expected [low, high] with 0 ≤ low < high, got [{low}, {high}]")
        return self


class ParallelSettings(Strict):
    """Where the segmentation pass runs: tile batches spread over worker processes."""

    n_workers: int | None = Field(
        None, ge=1, description="worker processes on this machine; null = the cores available (1: no workers)"
    )
    scheduler: str | None = Field(
        None, description="a Dask scheduler's address (tcp://host:8786): run the tasks on that cluster"
    )
    tiles_per_task: int = Field(16, ge=1, description="tiles one task segments (whole batches)")


class SegmentationParams(Strict):
    """Parameters of the ``segmentation`` pipeline."""

    segmenter: Literal["watershed", "cellpose"] = Field("watershed", description="segmentation backend")
    tiles_per_batch: int = Field(8, ge=1, description="tiles segmented together (one GPU call for cellpose)")
    export_label_masks: bool = Field(False, description="also write each tile's label map (TIFF)")
    slide_store: str | None = Field(
        "data/03_primary/slide_store",
        description="each slide's result kept here, reused while its file, tiles, parameters and code "
        "are the same (null: off)",
    )
    parallel: ParallelSettings = ParallelSettings()
    cell_features: CellFeatureSettings = CellFeatureSettings()
    watershed: WatershedSettings = WatershedSettings()
    cellpose: CellposeSettings = CellposeSettings()
    plausible: PlausibleRanges = PlausibleRanges()


class EvaluationParams(Strict):
    """Parameters of the ``evaluation`` pipeline (segmentation scored on a bench set)."""

    bench_dir: str = Field("../shared/data/bench/monuseg", description="images/, instances/, info.json")
    resolution_mpp: float | None = Field(None, gt=0, description="segment at this µm/px; null = native")
