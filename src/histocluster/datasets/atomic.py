"""Kedro datasets whose saves are all or nothing (:mod:`histocluster.atomic_files`).

The kedro-datasets types the catalog uses are subclassed with :class:`AtomicSaveMixin`
(same options, same files)::

    cells:
      type: histocluster.datasets.ParquetDataset
      filepath: data/03_primary/cells.parquet
      versioned: true
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Any

from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset
from kedro_datasets.pickle import PickleDataset as _PickleDataset
from kedro_datasets.pillow import ImageDataset as _ImageDataset
from kedro_datasets.plotly import JSONDataset as _PlotlyJSONDataset
from kedro_datasets.text import TextDataset as _TextDataset

from histocluster.atomic_files import partial_path


class AtomicSaveMixin:
    """For a kedro-datasets type that writes through ``self._get_save_path()``: on the
    local file system the save writes the temporary file, which is renamed when the
    dataset's own ``save`` returns (on object stores an upload is already all or
    nothing, and nothing changes)."""

    _protocol: str

    def _get_save_path(self) -> PurePosixPath:
        final = super()._get_save_path()  # type: ignore[misc]  # versioned: must not exist yet
        if self._protocol not in ("file", "local"):
            return final
        self._atomic_final = Path(final)
        return PurePosixPath(partial_path(final))

    def save(self, data: Any) -> None:
        # Kedro wraps this method (logging, version checks after the save); the parent's
        # own save is called unwrapped, so those checks see the renamed file.
        parent_save = super().save  # type: ignore[misc]
        raw_save = getattr(parent_save, "__wrapped__", None)
        self._atomic_final = None
        try:
            raw_save(self, data) if raw_save is not None else parent_save(data)
            if self._atomic_final is not None:
                os.replace(partial_path(self._atomic_final), self._atomic_final)
        finally:
            if self._atomic_final is not None:
                partial_path(self._atomic_final).unlink(missing_ok=True)
            self._atomic_final = None


class ParquetDataset(AtomicSaveMixin, _ParquetDataset):
    """``pandas.ParquetDataset``, saved atomically."""


class CSVDataset(AtomicSaveMixin, _CSVDataset):
    """``pandas.CSVDataset``, saved atomically."""


class JSONDataset(AtomicSaveMixin, _JSONDataset):
    """``json.JSONDataset``, saved atomically."""


class PlotlyJSONDataset(AtomicSaveMixin, _PlotlyJSONDataset):
    """``plotly.JSONDataset``, saved atomically."""


class ImageDataset(AtomicSaveMixin, _ImageDataset):
    """``pillow.ImageDataset``, saved atomically."""


class PickleDataset(AtomicSaveMixin, _PickleDataset):
    """``pickle.PickleDataset``, saved atomically."""


class TextDataset(AtomicSaveMixin, _TextDataset):
    """``text.TextDataset``, saved atomically."""
