"""Cellpose-SAM (cellpose 4) nuclei/cell segmentation, the GPU backend.

The model file is found, in order, at ``pretrained_model`` when it is a path, or under
the cellpose model folder (``CELLPOSE_LOCAL_MODELS_PATH``, else ``~/.cellpose/models``)
when it is a model name such as ``cpsam``. A missing file is downloaded by cellpose
where there is internet; offline, :func:`resolve_checkpoint` fails with a message saying
which file to put where. Tiles are segmented in batches (one ``eval`` call per batch),
in bfloat16 on a GPU.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from histocluster.errors import UserInputError
from histocluster.segmentation.settings import CellposeSettings

logger = logging.getLogger(__name__)

MODEL_NAMES = ("cpsam", "cpsam_v2")


class CheckpointError(UserInputError):
    """The Cellpose model file is missing and cannot be downloaded."""


def model_folder() -> Path:
    """Where cellpose keeps named models."""
    env = os.environ.get("CELLPOSE_LOCAL_MODELS_PATH")
    return Path(env) if env else Path.home() / ".cellpose" / "models"


def resolve_checkpoint(settings: CellposeSettings) -> Path:
    """The checkpoint file to load; downloads a named model when allowed and possible.

    Raises:
        CheckpointError: the file is not there and cannot be fetched; the message names
            the file, the folder and the settings that choose them.
    """
    missing = [name for name in ("cellpose", "torch") if importlib.util.find_spec(name) is None]
    if missing:
        raise CheckpointError(
            f"segmentation.segmenter cellpose needs {' and '.join(missing)}, which the default install "
            "leaves out: pip install -e '.[gpu]' (a CUDA machine; the Docker image has it), or use "
            "the CPU segmenter (segmentation.segmenter: watershed; conf/base)"
        )
    given = Path(settings.pretrained_model).expanduser()
    if given.is_file():
        return given
    if settings.pretrained_model not in MODEL_NAMES:
        raise CheckpointError(
            f"Cellpose checkpoint {given} does not exist (segmentation.cellpose.pretrained_model). "
            f"Give the path of a cellpose 4 model file, or one of the names {', '.join(MODEL_NAMES)}."
        )
    target = model_folder() / settings.pretrained_model
    if target.is_file():
        return target
    hint = (
        f"Cellpose model '{settings.pretrained_model}' is not at {target}. On a machine with internet, "
        f"cellpose downloads it there on first use; offline, copy the file '{settings.pretrained_model}' "
        f"(from huggingface.co/mouseland/cellpose-sam) to {target.parent}/ — or set "
        f"CELLPOSE_LOCAL_MODELS_PATH to the folder holding it, or segmentation.cellpose.pretrained_model "
        f"to its path."
    )
    if not settings.allow_download:
        raise CheckpointError(hint)
    try:
        from cellpose.models import cache_model_path

        return Path(cache_model_path(settings.pretrained_model))
    except Exception as exc:  # no network, proxy, disk: all end the same way
        raise CheckpointError(f"{hint} (download failed: {exc})") from exc


class CellposeSegmenter:
    """A loaded Cellpose-SAM model; :meth:`segment` takes a batch of tiles."""

    name = "cellpose"

    def __init__(self, settings: CellposeSettings) -> None:
        import torch
        from cellpose import models

        self.settings = settings
        checkpoint = resolve_checkpoint(settings)
        use_gpu = settings.gpu and torch.cuda.is_available()
        if settings.gpu and not use_gpu:
            logger.warning(
                "segmentation.cellpose.gpu is on but no CUDA device is available: running on CPU (slow)"
            )
        self.model = models.CellposeModel(
            gpu=use_gpu,
            pretrained_model=str(checkpoint),
            use_bfloat16=bool(settings.bfloat16 and use_gpu),
        )
        logger.info("Cellpose-SAM loaded from %s on %s", checkpoint, "GPU" if use_gpu else "CPU")

    def segment(self, images: list[np.ndarray], mpp: float) -> list[np.ndarray]:
        """Label maps (int32) of a batch of RGB tiles at ``mpp`` µm/px."""
        return [labels for labels, _ in self.segment_scored(images, mpp)]

    def segment_scored(
        self, images: list[np.ndarray], mpp: float
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Label maps with Cellpose's cell probability (the sigmoid of its ``cellprob``)."""
        s = self.settings
        diameter = s.diameter_um / mpp if s.diameter_um else None
        with warnings.catch_warnings():
            # Said by torch inside cellpose's flow following (a sparse tensor it builds
            # itself); nothing a user of this project can act on.
            warnings.filterwarnings("ignore", message="Sparse invariant checks", category=UserWarning)
            masks, flows, _ = self.model.eval(
                list(images),
                batch_size=s.batch_size,
                channel_axis=-1,
                normalize=s.normalize,
                resample=s.resample,
                diameter=diameter,
                flow_threshold=s.flow_threshold,
                cellprob_threshold=s.cellprob_threshold,
                min_size=max(1, int(round(s.min_size_um2 / (mpp * mpp)))),
            )
        return [
            (np.asarray(m, dtype=np.int32), _cell_probability(flow, np.shape(m)))
            for m, flow in zip(masks, flows, strict=True)
        ]


def _cell_probability(flow, shape: tuple[int, ...]) -> np.ndarray | None:
    """Sigmoid of Cellpose's cell-probability logits (``flows[2]``), or None when the
    output does not hold them in the image's shape."""
    try:
        logits = np.asarray(flow[2], dtype=np.float32)
    except (IndexError, TypeError, ValueError):
        return None
    if logits.shape != tuple(shape):
        return None
    return 1.0 / (1.0 + np.exp(-logits))
