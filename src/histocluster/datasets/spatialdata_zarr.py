"""A SpatialData ``.zarr`` folder, saved all or nothing, or nothing at all when the run makes none."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset


class SpatialDataDataset(AbstractDataset):
    """Saves ``{"spatialdata": <SpatialData>}`` (or anything with its ``write(path)``: the
    pipeline's :class:`~histocluster.reporting.spatialdata_export.CellsSpatialData`) as
    ``filepath`` (written beside it under a temporary name, then swapped in), and ``{}`` — the
    run made none — by removing an older one, so the folder never holds another run's cells. Loads the SpatialData (None when
    there is none)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self):
        if not self._filepath.is_dir():
            return None
        import spatialdata

        return spatialdata.read_zarr(self._filepath)

    def save(self, data: dict) -> None:
        target = self._filepath
        if not data:
            shutil.rmtree(target, ignore_errors=True)
            return
        partial = target.with_name(f".{target.name}.partial")
        old = target.with_name(f".{target.name}.old")
        for leftover in (partial, old):
            shutil.rmtree(leftover, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        data["spatialdata"].write(partial)
        if target.exists():
            target.rename(old)
        partial.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def _exists(self) -> bool:
        return self._filepath.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
