"""The ``resnet50`` embedder: ImageNet ResNet-50 features of a crop around each cell.

Each cell gets a square crop of a fixed *physical* size (``crop_um``, about 2–3 nucleus
diameters) centred on its centroid, cut from the tile the segmentation pass holds (read
with a margin, so crops at the tile's edge are whole), optionally with everything
outside the cell set to the ImageNet mean colour (``mask_background``), resized to
``input_size`` and normalised as ImageNet, and sent through the network in batches of
``batch_size``. On a GPU the forward pass runs in bfloat16 (``mixed_precision``).

Weights are never fetched in tests or offline runs: they come from ``weights_path``, or
from torch's cache (``$TORCH_HOME/hub/checkpoints``, where torchvision keeps what it
downloads). Where there is internet and ``allow_download`` is on, a missing file is
downloaded there on first use; otherwise the error says which file to put where.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from histocluster.errors import UserInputError
from histocluster.features.cell_pixels import TileCells, crop_cells
from histocluster.features.settings import ResNetSettings

logger = logging.getLogger(__name__)

FEATURES = 2048
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
#: torchvision's file names for ResNet50_Weights.IMAGENET1K_V2 and _V1, in that order.
WEIGHT_FILES = ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth")


class WeightsError(UserInputError):
    """The ResNet-50 weights are not where they were looked for."""


def cache_folder() -> Path:
    """Where torchvision keeps downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(settings: ResNetSettings) -> Path:
    """The weights file to load, or a :class:`WeightsError` naming what to put where."""
    if settings.weights_path:
        path = Path(settings.weights_path).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"ResNet-50 weights not found: {path} (segmentation.cell_features.resnet50.weights_path). "
                "Point it at a torchvision ResNet-50 state dict (.pth)."
            )
        return path
    folder = cache_folder()
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    if settings.allow_download:
        from torchvision.models import ResNet50_Weights

        try:
            ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False)
            return folder / WEIGHT_FILES[0]
        except Exception as exc:  # offline: say exactly what to do
            reason = f"downloading failed ({type(exc).__name__}: {exc})"
    else:
        reason = "downloading is off (segmentation.cell_features.resnet50.allow_download: false)"
    raise WeightsError(
        f"ResNet-50 ImageNet weights not found and {reason}. Put {WEIGHT_FILES[0]} "
        f"(torchvision ResNet50_Weights.IMAGENET1K_V2) in {folder} (set TORCH_HOME to move it), "
        "or set segmentation.cell_features.resnet50.weights_path to a .pth file."
    )


def choose_device(requested: str) -> str:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "segmentation.cell_features.resnet50.device is 'cuda' but torch sees no CUDA GPU"
        )
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def load_resnet50(path: Path, device: str):
    """ResNet-50 with its classification head replaced by the identity (2048-d output)."""
    import torch
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        raise WeightsError(f"{path}: not a ResNet-50 state dict ({type(exc).__name__}: {exc})") from None
    model.fc = torch.nn.Identity()
    return model.eval().to(device, memory_format=torch.channels_last)


def cell_crops(
    item: TileCells, crop_px: int, size: int, mask_background: bool, cells: range | None = None
) -> np.ndarray:
    """ResNet input crops: :func:`~histocluster.features.cell_pixels.crop_cells`, with the
    background painted ImageNet-mean when ``mask_background``."""
    fill = tuple(int(v) for v in (IMAGENET_MEAN * 255).astype(np.uint8)) if mask_background else None
    return crop_cells(item, crop_px, size, cells, fill=fill)


class ResNetEmbedder:
    """Loads the network once; :meth:`tile_features` embeds the cells of one tile."""

    name = "resnet50"

    def __init__(self, settings: ResNetSettings) -> None:
        self.settings = settings
        self.device = choose_device(settings.device)
        self.weights = resolve_weights(settings)
        self.model = load_resnet50(self.weights, self.device)
        logger.info("ResNet-50 embedder: weights %s on %s", self.weights, self.device)

    def forward(self, crops: np.ndarray) -> np.ndarray:
        """2048-d features of a batch of uint8 crops."""
        import torch

        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        mean = torch.as_tensor(IMAGENET_MEAN, device=self.device)[None, :, None, None]
        std = torch.as_tensor(IMAGENET_STD, device=self.device)[None, :, None, None]
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        amp = self.device == "cuda" and self.settings.mixed_precision
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            return self.model(x).float().cpu().numpy()

    def tile_features(self, item: TileCells) -> np.ndarray:
        """Features (cells × 2048, float32) of every cell of a tile already in memory
        (read with a margin of at least half a crop), in batches of ``batch_size``."""
        s = self.settings
        crop_px = max(2, int(round(s.crop_um / item.mpp)))
        out = np.empty((len(item.rows), FEATURES), dtype=np.float32)
        for start in range(0, len(item.rows), s.batch_size):
            part = range(start, min(start + s.batch_size, len(item.rows)))
            out[start : part.stop] = self.forward(
                cell_crops(item, crop_px, s.input_size, s.mask_background, part)
            )
        return out
