"""A Kedro dataset for instance label maps: compressed TIFF, 16 or 32 bits, never 8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from kedro.io import AbstractDataset, DatasetError

from histocluster.atomic_files import atomic_path
from histocluster.segmentation.label_maps import label_dtype


class LabelMaskDataset(AbstractDataset[np.ndarray, np.ndarray]):
    """One label map (0 = background) as a zlib-compressed TIFF.

    Saved as uint16 when the largest label fits, else uint32; loads as that dtype.
    Example catalog entry (one file per tile)::

        label_masks:
          type: partitions.PartitionedDataset
          path: data/03_primary/label_masks
          dataset: histocluster.datasets.LabelMaskDataset
          filename_suffix: .tif
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> np.ndarray:
        return tifffile.imread(self._filepath)

    def save(self, data: np.ndarray) -> None:
        data = np.asarray(data)
        if data.ndim != 2 or not np.issubdtype(data.dtype, np.integer) or data.min(initial=0) < 0:
            raise DatasetError(f"{self._filepath}: a label map is a 2-D array of non-negative integers")
        with atomic_path(self._filepath) as partial:
            tifffile.imwrite(partial, data.astype(label_dtype(data)), compression="zlib")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
