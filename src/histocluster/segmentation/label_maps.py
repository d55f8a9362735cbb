"""Instance label maps in memory: the integer type they are stored as, and a compressed
holder for maps waiting to be written."""

from __future__ import annotations

import zlib

import numpy as np


def label_dtype(labels: np.ndarray) -> type:
    """uint16 when every label fits, else uint32 (8 bits would wrap at 255 cells)."""
    return np.uint16 if int(labels.max(initial=0)) < 2**16 else np.uint32


class CompressedLabels:
    """A label map kept zlib-compressed until the catalog saves it (a lazy partition:
    calling it gives the map back)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.shape, self.dtype = labels.shape, label_dtype(labels)
        self.blob = zlib.compress(labels.astype(self.dtype).tobytes(), 1)

    def __call__(self) -> np.ndarray:
        return np.frombuffer(zlib.decompress(self.blob), dtype=self.dtype).reshape(self.shape)
