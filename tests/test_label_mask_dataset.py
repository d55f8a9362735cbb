"""Label maps are written as 16- or 32-bit TIFF, never 8-bit, and read back intact."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError

from histocluster.datasets import LabelMaskDataset


@pytest.mark.parametrize(("top", "dtype"), [(300, np.uint16), (70_000, np.uint32)])
def test_round_trip_keeps_every_label(tmp_path, top, dtype):
    labels = np.zeros((64, 64), np.int64)
    labels[10:20, 10:20] = top
    labels[30:40, 30:40] = 256  # would wrap to 0 in 8 bits
    dataset = LabelMaskDataset(filepath=str(tmp_path / "tile.tif"))
    dataset.save(labels)
    back = dataset.load()
    assert back.dtype == dtype
    assert np.array_equal(back, labels)


def test_rejects_what_is_not_a_label_map(tmp_path):
    with pytest.raises(DatasetError, match="label map"):
        LabelMaskDataset(filepath=str(tmp_path / "x.tif")).save(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DatasetError, match="label map"):
        LabelMaskDataset(filepath=str(tmp_path / "x.tif")).save(np.full((2, 2), -1))
