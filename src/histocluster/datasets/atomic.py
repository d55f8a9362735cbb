"""Kedro datasets whose saves are all or nothing (:mod:`histocluster.atomic_files`).

The kedro-datasets types the catalog uses are subclassed with :class:`AtomicSaveMixin`
(same options, same files)::

    cells:
      type: histocluster.datasets.ParquetDataset
      filepath: data/03_primary/cells.parquet
      versioned: true
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from kedro_datasets.json import JSONDataset as _JSONDataset
from kedro_datasets.pandas import CSVDataset as _CSVDataset
from kedro_datasets.pandas import ParquetDataset as _ParquetDataset
from kedro_datasets.pickle import PickleDataset as _PickleDataset
from kedro_datasets.pillow import ImageDataset as _ImageDataset
from kedro_datasets.plotly import JSONDataset as _PlotlyJSONDataset
from kedro_datasets.text import TextDataset as _TextDataset

from histocluster.atomic_files import atomic_path


class AtomicSaveMixin:
    """For a kedro-datasets type that writes through ``self._get_save_path()``: on the
    local file system its save writes a temporary file (:func:`~histocluster.atomic_files.
    atomic_path`), renamed when the dataset's own ``save`` returns; on object stores an
    upload is already all or nothing, and nothing changes. Outside a save,
    ``_get_save_path`` is the parent's."""

    _protocol: str
    _writing_to: PurePosixPath | None = None  # the temporary file, during a save

    def _get_save_path(self) -> PurePosixPath:
        if self._writing_to is not None:
            return self._writing_to
        return super()._get_save_path()  # type: ignore[misc]

    def save(self, data: Any) -> None:
        # Kedro wraps this method (logging, version checks after the save); the parent's
        # own save is called unwrapped, so those checks see the renamed file.
        parent_save = super().save  # type: ignore[misc]
        raw_save = getattr(parent_save, "__wrapped__", None)
        if self._protocol not in ("file", "local"):
            raw_save(self, data) if raw_save is not None else parent_save(data)
            return
        final = super()._get_save_path()  # type: ignore[misc]  # versioned: must not exist yet
        with atomic_path(final) as partial:
            self._writing_to = PurePosixPath(partial)
            try:
                raw_save(self, data) if raw_save is not None else parent_save(data)
            finally:
                self._writing_to = None


class ParquetDataset(AtomicSaveMixin, _ParquetDataset):
    """``pandas.ParquetDataset``, saved atomically."""


class CSVDataset(AtomicSaveMixin, _CSVDataset):
    """``pandas.CSVDataset``, saved atomically."""


class JSONDataset(AtomicSaveMixin, _JSONDataset):
    """``json.JSONDataset``, saved atomically."""


class PlotlyJSONDataset(AtomicSaveMixin, _PlotlyJSONDataset):
    """``plotly.JSONDataset``, saved atomically."""


#: zlib level of saved PNGs unless ``save_args`` say otherwise: level 1 encodes a 256² crop in
#: 3.7 ms instead of 16 ms at Pillow's default 6, for files ~15 % larger. On the 20k² fixture
#: the gallery crops (2,000) and galleries (100) had spent ~70 s of a 165 s run in PNG encoding.
PNG_COMPRESS_LEVEL = 1


class ImageDataset(AtomicSaveMixin, _ImageDataset):
    """``pillow.ImageDataset``, saved atomically; PNGs at zlib level :data:`PNG_COMPRESS_LEVEL`
    unless ``save_args`` set ``compress_level``."""

    def __init__(self, *, filepath, save_args=None, **kwargs) -> None:
        if str(filepath).lower().endswith(".png"):
            save_args = {"compress_level": PNG_COMPRESS_LEVEL, **(save_args or {})}
        super().__init__(filepath=filepath, save_args=save_args, **kwargs)


class PickleDataset(AtomicSaveMixin, _PickleDataset):
    """``pickle.PickleDataset``, saved atomically."""


class TextDataset(AtomicSaveMixin, _TextDataset):
    """``text.TextDataset``, saved atomically."""
