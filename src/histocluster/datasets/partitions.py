"""A partitioned dataset for which "no partitions" is a valid answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset


class OptionalPartitionedDataset(PartitionedDataset):
    """:class:`~kedro_datasets.partitions.PartitionedDataset` that loads an empty mapping
    when the folder holds no partition (kedro-datasets raises instead). A run of slides
    without tissue, or without clusters, writes no tile previews, crops or galleries; the
    stages after it must then see "none", not fail."""

    def load(self) -> dict[str, Callable[[], Any]]:
        self._invalidate_caches()
        if not self._list_partitions():
            return {}
        return super().load()
