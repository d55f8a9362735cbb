"""Model answers cached on disk, keyed by what was asked: the crop's pixels and how it
was made, the prompt, the vocabulary and the model (a rerun costs nothing; a new Pillow
that encodes PNGs differently does not re-bill every request)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def request_key(pixels: np.ndarray, crop_spec: str, prompt: str, vocabulary: list[str], model: str) -> str:
    """Cache key of one question: the crop's pixels (array bytes, shape and type, not an
    encoding of them), how the crop was made (``crop_spec``: size, µm, outline), the
    prompt, the vocabulary (order-free) and the model."""
    pixels = np.ascontiguousarray(pixels)
    digest = hashlib.sha256()
    for part in (
        pixels.tobytes(),
        f"{pixels.shape}{pixels.dtype.str}".encode(),
        crop_spec.encode(),
        prompt.encode(),
        json.dumps(sorted(vocabulary)).encode(),
        model.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


class AnswerCache:
    """Answers on disk, one JSON file per key (``<folder>/<key[:2]>/<key>.json``)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(record))
        partial.replace(path)
