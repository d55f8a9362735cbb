"""A partitioned dataset for which "no partitions" is a valid answer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro_datasets.partitions import PartitionedDataset

from histocluster.atomic_files import is_partial


class OptionalPartitionedDataset(PartitionedDataset):
    """:class:`~kedro_datasets.partitions.PartitionedDataset` that loads an empty mapping
    when the folder holds no partition (kedro-datasets raises instead). A run of slides
    without tissue, or without clusters, writes no tile previews, crops or galleries; the
    stages after it must then see "none", not fail.

    A file that an interrupted save left under its temporary name
    (:mod:`histocluster.datasets.atomic`) is not a partition."""

    def _list_partitions(self) -> list[str]:
        if self._cached_partitions is None:
            self._cached_partitions = [p for p in super()._list_partitions() if not is_partial(p)]
        return self._cached_partitions

    def load(self) -> dict[str, Callable[[], Any]]:
        self._invalidate_caches()
        if not self._list_partitions():
            return {}
        return super().load()
