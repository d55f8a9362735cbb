"""Segmenters behind one interface: ``segment(images, mpp) -> label maps``.

* ``watershed`` (:mod:`.watershed`): H&E nuclei by marker-controlled watershed, CPU; the
  foreground from a threshold (classical) or from the small U-Net of :mod:`.nuclei_net`.
* ``cellpose`` (:mod:`.cellpose`): Cellpose-SAM, GPU (CPU works, slowly).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Segmenter(Protocol):
    name: str

    def segment(self, images: list[np.ndarray], mpp: float) -> list[np.ndarray]:
        """Instance label maps (int32, 0 = background) of RGB uint8 images at ``mpp`` µm/px."""
        ...


def make_segmenter(kind: str, watershed_settings=None, cellpose_settings=None) -> Segmenter:
    """The segmenter named ``kind``, ready to use (Cellpose loads its model here)."""
    if kind == "watershed":
        from histocluster.segmentation.watershed import WatershedSegmenter, WatershedSettings

        return WatershedSegmenter(watershed_settings or WatershedSettings())
    if kind == "cellpose":
        from histocluster.segmentation.cellpose import CellposeSegmenter, CellposeSettings

        return CellposeSegmenter(cellpose_settings or CellposeSettings())
    raise ValueError(f"unknown segmenter {kind!r}: choose 'watershed' or 'cellpose'")
