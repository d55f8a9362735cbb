"""Parameter models of the wsi stage (tiling and filtering): no heavy imports."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator
from pydantic.dataclasses import dataclass

from histocluster.strict_model import Strict


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TissueSettings:
    """Thresholds and clean-up sizes for :func:`detect_tissue` (validated on creation:
    unknown keys and out-of-range values are errors)."""

    min_saturation: float = Field(0.07, ge=0, le=1)
    min_optical_density: float = Field(0.15, ge=0)
    max_saturation: float = Field(0.2, ge=0, le=1)
    max_optical_density: float = Field(0.35, ge=0)
    closing_um: float = Field(16.0, ge=0)
    min_object_um2: float = Field(10_000.0, ge=0)
    min_object_fraction: float = Field(0.02, ge=0, le=1)
    max_hole_um2: float = Field(5_000.0, ge=0)


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class QualityThresholds:
    """Limits a tile must meet to be kept (upstream defaults; validated on creation)."""

    min_edge_density: float = 0.02
    max_bright_ratio: float = 0.8
    max_dark_ratio: float = 0.8
    min_intensity_std: float = 10.0
    min_laplacian_var: float = 50.0
    min_color_variance: float = 5.0
    min_tissue_fraction: float = Field(0.1, ge=0, le=1)
    bright_level: int = Field(220, ge=0, le=255, description="grey level above which a pixel is bright")
    dark_level: int = Field(50, ge=0, le=255, description="grey level below which a pixel is dark")
    canny_low: int = Field(50, ge=0)
    canny_high: int = Field(150, ge=0)


class TilingParams(Strict):
    """Parameters of the ``tiling`` pipeline."""

    target_mpp: list[float] = Field([0.5], min_length=1, description="tile resolutions, µm/px")
    tile_size: int = Field(512, gt=0, description="tile side in output pixels")
    overlap: int = Field(64, ge=0, description="overlap of neighbouring tiles, output pixels")
    default_mpp: float = Field(0.5, gt=0, description="µm/px for slides without metadata")
    estimate_mpp: bool = Field(
        True, description="estimate the µm/px of a slide without any from its nuclei (else default_mpp)"
    )
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


class ContactSheetParams(Strict):
    max_tiles: int = Field(24, ge=0, description="kept and rejected tiles shown, each")
    thumb_size: int = Field(160, ge=16)


class FilteringParams(Strict):
    """Parameters of the ``filtering`` pipeline."""

    enabled: bool = True
    thresholds: QualityThresholds = QualityThresholds()
    contact_sheet: ContactSheetParams = ContactSheetParams()
