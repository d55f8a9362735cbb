"""Parameter models of the per-cell features: no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass as settings_dataclass


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class MorphologySettings:
    """Settings of the ``morphology`` embedder."""

    texture: bool = Field(
        True,
        description="use the cell table's intensity, texture and ring features (segmentation.cell_features)",
    )
    context_neighbours: int = Field(8, ge=0, description="k nearest cells averaged as context; 0 = none")
    clip: float = Field(5.0, gt=0, description="standardised values are clipped to ±clip")


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ResNetSettings:
    """Settings of the ``resnet50`` embedder."""

    crop_um: float = Field(24.0, gt=0, description="side of the square crop around each cell, µm")
    input_size: int = Field(224, ge=32, description="crops are resized to this many pixels")
    mask_background: bool = Field(False, description="paint everything outside the cell ImageNet-mean")
    batch_size: int = Field(256, ge=1)
    weights_path: str | None = Field(None, description="a torchvision ResNet-50 state dict (.pth)")
    allow_download: bool = Field(True, description="fetch ImageNet weights where there is internet")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: bool = Field(True, description="bfloat16 on the GPU")


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TypeNetSettings:
    """Settings of the ``typenet`` embedder (:mod:`histocluster.features.type_net`)."""

    weights_path: str | None = Field(
        None, description="a .pt or .onnx from bench/train_type_net.py; null = the shipped model"
    )
    rotations: Literal[1, 8] = Field(
        1, description="1, or features averaged over 8 rotations/flips (5× slower, CoNSeP +0.01)"
    )
    batch_size: int = Field(
        128, ge=1, description="crops per network call (512: +74 MiB per worker, no faster)"
    )


@settings_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CellFeatureSettings:
    """Per-cell pixel features computed in the segmentation pass, from the tile and label
    map it already holds (no second read of the slide)."""

    texture: bool = Field(True, description="intensity, texture and ring features in the cell table")
    ring_um: float = Field(2.0, gt=0, description="width of the ring around each cell, µm")
    deep: Literal["none", "resnet50", "typenet"] = Field(
        "none",
        description="also a network's features of a crop around each cell: ResNet-50 "
        "(clustering.embedders.resnet50) or the type network (clustering.embedders.typenet)",
    )
    resnet50: ResNetSettings = ResNetSettings()
    typenet: TypeNetSettings = TypeNetSettings()
