"""A Kedro dataset for QuPath GeoJSON written as a stream (gzip for ``.gz`` paths)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from histocluster.qupath import read_feature_collection, write_feature_collection


class GeoJSONStreamDataset(AbstractDataset[Iterable[dict] | Callable[[], Iterable[dict]], dict]):
    """Saves an iterable of GeoJSON Features (or a callable returning one) as a
    FeatureCollection without building it in memory; loads the whole collection.

    Used inside a PartitionedDataset, one file per slide::

        qupath_geojson:
          type: partitions.PartitionedDataset
          path: data/08_reporting/qupath
          dataset: histocluster.datasets.GeoJSONStreamDataset
    """

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict:
        return read_feature_collection(self._filepath)

    def save(self, data) -> None:
        write_feature_collection(self._filepath, data() if callable(data) else data)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
