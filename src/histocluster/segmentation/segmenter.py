"""Segmenters behind one interface: ``segment(images, mpp) -> label maps``.

* ``watershed`` (:mod:`.watershed`): H&E nuclei by marker-controlled watershed, CPU; the
  foreground from a threshold (classical) or from the small U-Net of :mod:`.nuclei_net`.
* ``cellpose`` (:mod:`.cellpose`): Cellpose-SAM, GPU (CPU works, slowly).

Both also offer :meth:`Segmenter.segment_scored`: each label map with the segmenter's
per-pixel confidence (or None), which becomes the cell table's ``score``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from histocluster.segmentation.settings import SegmentationParams


class Segmenter(Protocol):
    name: str

    def segment(self, images: list[np.ndarray], mpp: float) -> list[np.ndarray]:
        """Instance label maps (int32, 0 = background) of RGB uint8 images at ``mpp`` µm/px."""
        ...

    def segment_scored(
        self, images: list[np.ndarray], mpp: float
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per image: its label map and a per-pixel confidence in [0, 1] (None if the
        segmenter has none)."""
        ...


def make_segmenter(params: SegmentationParams) -> Segmenter:
    """The configured segmenter, ready to use (Cellpose loads its model here)."""
    if params.segmenter == "watershed":
        from histocluster.segmentation.watershed import WatershedSegmenter

        return WatershedSegmenter(params.watershed)
    if params.segmenter == "cellpose":
        from histocluster.segmentation.cellpose import CellposeSegmenter

        return CellposeSegmenter(params.cellpose)
    raise ValueError(f"unknown segmenter {params.segmenter!r}: choose 'watershed' or 'cellpose'")
