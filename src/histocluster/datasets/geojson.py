"""Kedro datasets for JSON written as a stream: QuPath GeoJSON (gzip for ``.gz``) and
the per-slide viewer JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from histocluster.atomic_files import atomic_path
from histocluster.reporting.qupath import read_feature_collection, write_feature_collection


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


class StreamedJSONDataset(AbstractDataset):
    """Saves a :class:`~histocluster.reporting.annotation.StreamedJSON` (or a callable returning one)
    item by item, so a slide's 10⁵ cells never sit in memory as one document; loads the
    whole object. Written to a temporary name and renamed."""

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict:
        return json.loads(self._filepath.read_text())

    def save(self, data) -> None:
        data = data() if callable(data) else data
        with atomic_path(self._filepath) as partial, partial.open("w", encoding="utf-8") as handle:
            head = json.dumps(data.header, allow_nan=False)
            handle.write(head[:-1] + (", " if data.header else "") + json.dumps(data.list_key) + ": [\n")
            for k, item in enumerate(data.items):
                handle.write((",\n" if k else "") + json.dumps(item, separators=(",", ":"), allow_nan=False))
            handle.write("\n]}\n")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
