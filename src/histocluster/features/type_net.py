"""The ``typenet`` embedder: what a small CNN that learnt nucleus *types* sees in each cell.

The hand-made ``morphology`` features describe a nucleus but were never taught which
differences matter for its type, and names given on some slides carry over to others only
as far as those features allow (docs/benchmarks.md, *Names that carry over*). This network
(``TypeNet``: four stages of 3 × 3 convolutions, 24-48-96-128 channels, global average
pool) learnt epithelial / fibroblast / inflammatory / other from the typed nucleus points
of CRCHistoPhenotypes (70 colorectal H&E images at 20×; ``bench/train_type_net.py``, with
stain, rotation and shift augmentation). Each cell gets a 20 µm crop centred on it at
0.5 µm/px (40 × 40 pixels); its features are the network's 128 pooled features and its
log-probability of each type (``rotations: 8`` averages each over the crop's 8
right-angle rotations and flips: 5 × slower, on CoNSeP +0.01 macro-F1). The weights ship
with the package (1.1 MB); ``weights_path`` takes others written by the training script.

It learnt from colorectal tissue: on other organs its features still describe nuclear
shape, texture and surroundings, but its type guesses mean less.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

from histocluster.errors import UserInputError
from histocluster.features.cell_pixels import TileCells, crop_cells
from histocluster.features.settings import TypeNetSettings

logger = logging.getLogger(__name__)

#: Crop side in pixels at WORK_MPP (20 µm), and the µm/px the network learnt at.
CROP = 40
WORK_MPP = 0.5
#: Width of the pooled features, and of a cell's features with the shipped weights' 4 types.
WIDTH = 128
FEATURES = WIDTH + 4
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "type_net.pt"


class TypeNetWeightsError(UserInputError):
    """The type network's weights are missing or not a type-network checkpoint."""


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    return torch, F, nn


def build_type_net(classes: int, widths: tuple[int, ...] = (24, 48, 96, WIDTH)):
    """A fresh ``TypeNet`` (torch module) with ``classes`` outputs."""
    torch, F, nn = _torch_modules()

    def block(i: int, o: int):
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)
        )

    class TypeNet(nn.Module):
        """Four stages of 3 × 3 convolutions, global average pool → ``features``; a
        linear head → type logits."""

        def __init__(self) -> None:
            super().__init__()
            w = widths
            self.body = nn.Sequential(
                block(3, w[0]), block(w[0], w[0]), nn.MaxPool2d(2),
                block(w[0], w[1]), block(w[1], w[1]), nn.MaxPool2d(2),
                block(w[1], w[2]), block(w[2], w[2]), nn.MaxPool2d(2),
                block(w[2], w[3]),
            )  # fmt: skip
            self.drop = nn.Dropout(0.3)
            self.head = nn.Linear(w[3], classes)

        def features(self, x):
            return F.adaptive_avg_pool2d(self.body(x), 1).flatten(1)

        def forward(self, x):
            return self.head(self.drop(self.features(x)))

    return TypeNet()


def to_input(crops: np.ndarray):
    """uint8 (or 0–1 float) crops N × h × w × 3 → the network's normalised N × 3 × h × w tensor."""
    torch, _, _ = _torch_modules()
    x = crops.astype(np.float32) / 255 if crops.dtype == np.uint8 else crops.astype(np.float32)
    return torch.from_numpy((np.ascontiguousarray(x.transpose(0, 3, 1, 2)) - 0.5) / 0.25)


def type_net_weights(path: str | Path | None = None) -> Path:
    """The checkpoint to load (the shipped one when ``path`` is None), or a
    :class:`TypeNetWeightsError` naming the missing file, or saying that torch, which runs
    the network, is not installed (the default install has none)."""
    if importlib.util.find_spec("torch") is None:
        raise TypeNetWeightsError(
            "segmentation.cell_features.deep: typenet runs the type network in torch, which is not "
            "installed: pip install 'histocluster[train]' (for the CPU build first: pip install torch "
            "--index-url https://download.pytorch.org/whl/cpu), or set segmentation.cell_features.deep: none"
        )
    path = Path(path).expanduser() if path else SHIPPED_WEIGHTS
    if not path.is_file():
        raise TypeNetWeightsError(
            f"type network weights not found: {path} (segmentation.cell_features.typenet.weights_path)"
        )
    return path


def load_type_net(path: str | Path | None = None):
    """The network (eval mode) and its class names from a checkpoint written by
    ``bench/train_type_net.py`` (the shipped one by default)."""
    torch, _, _ = _torch_modules()
    path = type_net_weights(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net = build_type_net(len(saved["classes"]))
        net.load_state_dict(saved["state_dict"])
    except Exception as exc:
        raise TypeNetWeightsError(
            f"{path}: not a type-network checkpoint from bench/train_type_net.py ({type(exc).__name__}: {exc})"
        ) from None
    return net.eval(), [str(c) for c in saved["classes"]]


def crop_features(net, crops: np.ndarray, rotations: int = 8) -> np.ndarray:
    """Per crop (uint8, CROP × CROP at WORK_MPP): the pooled features and the log-probability
    of each type, each the mean over ``rotations`` (1 or 8) right-angle rotations and flips."""
    torch, _, _ = _torch_modules()
    x = to_input(crops)
    views = [(k, flip) for k in range(4) for flip in (False, True)][:rotations]
    feats, logp = 0.0, 0.0
    with torch.inference_mode():
        for k, flip in views:
            t = torch.rot90(x, k, (2, 3))
            f = net.features(t.flip(3) if flip else t)
            feats = feats + f.numpy()
            logp = logp + torch.log_softmax(net.head(f), 1).numpy()
    return (np.hstack([feats, logp]) / len(views)).astype(np.float32)


class TypeNetEmbedder:
    """Loads the network once; :meth:`tile_features` embeds the cells of one tile."""

    name = "typenet"

    def __init__(self, settings: TypeNetSettings) -> None:
        self.settings = settings
        self.net, self.classes = load_type_net(settings.weights_path)
        self.columns = [f"typenet:f{k}" for k in range(WIDTH)] + [f"typenet:logp_{c}" for c in self.classes]
        logger.info(
            "Type-network embedder: %s (%s), %d rotations",
            settings.weights_path or SHIPPED_WEIGHTS.name,
            ", ".join(self.classes),
            settings.rotations,
        )

    def tile_features(self, item: TileCells) -> np.ndarray:
        """Features (cells × (128 + types), float32) of every cell of a tile already in
        memory (read with a margin of at least half a crop)."""
        s = self.settings
        crop_px = max(2, int(round(CROP * WORK_MPP / item.mpp)))
        out = np.empty((len(item.rows), len(self.columns)), dtype=np.float32)
        for start in range(0, len(item.rows), s.batch_size):
            part = range(start, min(start + s.batch_size, len(item.rows)))
            out[start : part.stop] = crop_features(
                self.net, crop_cells(item, crop_px, CROP, part), s.rotations
            )
        return out
