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
right-angle rotations and flips: 5 × slower, on CoNSeP +0.01 macro-F1). The network ships
with the package as an ONNX model (1.1 MB) run by onnxruntime, so the default install (no
torch) has it; ``weights_path`` takes others written by the training script (a ``.pt``
checkpoint runs in torch; ``--export`` writes the ONNX model).

It learnt from colorectal tissue: on other organs its features still describe nuclear
shape, texture and surroundings, but its type guesses mean less.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from histocluster.errors import UserInputError
from histocluster.features.cell_pixels import TileCells, crop_cells
from histocluster.features.onnx_models import cpu_session, write_onnx
from histocluster.features.settings import TypeNetSettings

logger = logging.getLogger(__name__)

#: Crop side in pixels at WORK_MPP (20 µm), and the µm/px the network learnt at.
CROP = 40
WORK_MPP = 0.5
#: Width of the pooled features, and of a cell's features with the shipped weights' 4 types.
WIDTH = 128
FEATURES = WIDTH + 4
#: The shipped network, as an ONNX model run by onnxruntime (in the default install);
#: checkpoints from ``bench/train_type_net.py`` (``.pt``) run in torch.
SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "type_net.onnx"
ONNX_INPUT, ONNX_OUTPUT = "crops", "features"
#: Column prefix of the network's log-probability of each type in a cell's features.
LOGP_PREFIX = "typenet:logp_"


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

        def embed(self, x):
            """The pooled features, then the type log-probabilities (what the embedder gives)."""
            f = self.features(x)
            return torch.cat([f, torch.log_softmax(self.head(f), 1)], 1)

    return TypeNet()


def to_input_array(crops: np.ndarray) -> np.ndarray:
    """uint8 (or 0–1 float) crops N × h × w × 3 → the network's normalised float32 N × 3 × h × w."""
    x = crops.astype(np.float32) / 255 if crops.dtype == np.uint8 else crops.astype(np.float32)
    return (np.ascontiguousarray(x.transpose(0, 3, 1, 2)) - 0.5) / 0.25


def to_input(crops: np.ndarray):
    """:func:`to_input_array` as a torch tensor (for training)."""
    torch, _, _ = _torch_modules()
    return torch.from_numpy(to_input_array(crops))


def type_net_weights(path: str | Path | None = None) -> Path:
    """The model file to load (the shipped ONNX model when ``path`` is None), or a
    :class:`TypeNetWeightsError` naming the missing file, or saying that torch, which runs
    a ``.pt`` checkpoint, is not installed (the default install has none)."""
    path = Path(path).expanduser() if path else SHIPPED_WEIGHTS
    if not path.is_file():
        raise TypeNetWeightsError(
            f"type network weights not found: {path} (segmentation.cell_features.typenet.weights_path)"
        )
    if path.suffix != ".onnx" and importlib.util.find_spec("torch") is None:
        raise TypeNetWeightsError(
            f"{path}: a torch checkpoint, and torch is not installed: pip install 'histocluster[train]' "
            "(for the CPU build first: pip install torch --index-url https://download.pytorch.org/whl/cpu), "
            "or export it with bench/train_type_net.py --export and point weights_path at the .onnx file"
        )
    return path


def _foreign(path: Path, exc: Exception) -> TypeNetWeightsError:
    return TypeNetWeightsError(
        f"{path}: not a type-network model from bench/train_type_net.py ({type(exc).__name__}: {exc})"
    )


class TypeNetRunner:
    """The type network ready to run: :meth:`forward` maps normalised crops (N × 3 × 40 × 40,
    float32) to their pooled features and type log-probabilities (N × (128 + types)).
    An ONNX model runs in onnxruntime (``threads``: 0 = its default), a ``.pt`` checkpoint
    in torch."""

    def __init__(self, path: str | Path | None = None, threads: int = 0) -> None:
        self.path = type_net_weights(path)
        self.module = self.session = None
        if self.path.suffix == ".onnx":
            try:
                self.session = cpu_session(self.path, threads)
                meta = self.session.get_modelmeta().custom_metadata_map
                self.classes = [str(c) for c in json.loads(meta["classes"])]
            except Exception as exc:  # noqa: BLE001 — any load failure is the file's fault
                raise _foreign(self.path, exc) from None
            return
        torch, _, _ = _torch_modules()
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            module = build_type_net(len(saved["classes"]))
            module.load_state_dict(saved["state_dict"])
        except Exception as exc:  # noqa: BLE001
            raise _foreign(self.path, exc) from None
        self.module, self.classes = module.eval(), [str(c) for c in saved["classes"]]

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.session is not None:
            return self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(x, np.float32)})[0]
        torch, _, _ = _torch_modules()
        with torch.inference_mode():
            return self.module.embed(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def load_type_net(path: str | Path | None = None, threads: int = 0) -> TypeNetRunner:
    """The type network of ``path`` (the shipped ONNX model by default), ready to run."""
    return TypeNetRunner(path, threads)


def export_onnx(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the ``.pt`` checkpoint's network as an ONNX model at ``out``: input ``crops``
    (n, 3, 40, 40), output ``features`` (n, 128 + types: pooled features, then type
    log-probabilities); the class names in the model's metadata. Written beside ``out`` and
    renamed: never a half-written model under the final name."""
    torch, _, nn = _torch_modules()
    runner = TypeNetRunner(checkpoint)
    if runner.module is None:
        raise TypeNetWeightsError(f"{checkpoint}: export needs a .pt checkpoint")

    class Exported(nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.embed(x)

    return write_onnx(
        Exported(runner.module).eval(),
        torch.zeros(1, 3, CROP, CROP),
        out,
        (ONNX_INPUT, ONNX_OUTPUT),
        {0: "batch"},
        {"classes": json.dumps(runner.classes)},
        "histocluster type network (bench/train_type_net.py)",
    )


def crop_features(net: TypeNetRunner, crops: np.ndarray, rotations: int = 8) -> np.ndarray:
    """Per crop (uint8, CROP × CROP at WORK_MPP): the pooled features and the log-probability
    of each type, each the mean over ``rotations`` (1 or 8) right-angle rotations and flips."""
    x = to_input_array(crops)
    views = [(k, flip) for k in range(4) for flip in (False, True)][:rotations]
    total = 0.0
    for k, flip in views:
        view = np.rot90(x, k, axes=(2, 3))
        total = total + net.forward(view[..., ::-1] if flip else view)
    return (total / len(views)).astype(np.float32)


class TypeNetEmbedder:
    """Loads the network once; :meth:`tile_features` embeds the cells of one tile."""

    name = "typenet"

    def __init__(self, settings: TypeNetSettings, threads: int = 0) -> None:
        self.settings = settings
        self.net = load_type_net(settings.weights_path, threads)
        self.classes = self.net.classes
        self.columns = [f"typenet:f{k}" for k in range(WIDTH)] + [f"{LOGP_PREFIX}{c}" for c in self.classes]
        logger.info(
            "Type-network embedder: %s (%s), %d rotations",
            self.net.path.name,
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


def network_cell_types(deep, chunk: int = 100_000) -> pd.DataFrame | None:
    """Each cell's type by the type network, from the features the segmentation pass
    stored (``segmentation.cell_features.deep: typenet``; an
    :class:`~histocluster.features.embeddings.Embeddings`): ``cell_id``, ``network_type``
    (the type of highest log-probability; None for a cell without network features) and
    ``network_probability``. None when the features hold no type network's output."""
    columns = list(getattr(deep, "columns", None) or [])
    at = [k for k, name in enumerate(columns) if name.startswith(LOGP_PREFIX)]
    if deep is None or not at:
        return None
    classes = np.array([columns[k][len(LOGP_PREFIX) :] for k in at], dtype=object)
    n = len(deep.cell_ids)
    best = np.full(n, None, dtype=object)
    probability = np.full(n, np.nan, dtype=np.float32)
    for start in range(0, n, chunk):  # a block of rows at a time: the matrix may be memory-mapped
        logp = np.asarray(deep.matrix[start : start + chunk], dtype=np.float32)[:, at]
        known = np.isfinite(logp).all(axis=1)
        top = np.argmax(np.where(known[:, None], logp, 0.0), axis=1)
        p = np.exp(logp - logp.max(axis=1, keepdims=True))  # the log-probabilities, renormalised
        p = p[np.arange(len(top)), top] / p.sum(axis=1)
        rows = np.arange(start, start + len(top))[known]
        best[rows], probability[rows] = classes[top[known]], p[known]
    return pd.DataFrame({"cell_id": deep.cell_ids, "network_type": best, "network_probability": probability})
