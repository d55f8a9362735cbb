"""The newest saved version of a versioned pickle, or None when none was ever saved.

A pipeline cannot read and write one catalog entry; the classification pipeline reads the
cell-type model an earlier run saved (to pre-name the clusters of a new clustering) and
saves the next one. This read-only dataset points at the same folder::

    previous_cell_type_model:
      type: histocluster.datasets.NewestPickleDataset
      filepath: data/06_models/cell_type_model.pkl

It is read when the node that needs it starts, so it is the version saved before this run.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class NewestPickleDataset(AbstractDataset[None, Any]):
    """Loads ``<filepath>/<newest version>/<file name>`` (Kedro's versioned layout; versions
    are timestamps, so they sort in time), or None when there is no saved version."""

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def newest(self) -> Path | None:
        """The newest saved file, or None."""
        if not self._filepath.is_dir():
            return None
        saved = sorted(
            folder / self._filepath.name
            for folder in self._filepath.iterdir()
            if not folder.name.startswith(".") and (folder / self._filepath.name).is_file()
        )
        return saved[-1] if saved else None

    def load(self) -> Any:
        path = self.newest()
        if path is None:
            return None
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)  # noqa: S301 - the project's own saved model
        except Exception as exc:
            raise DatasetError(f"{path}: not a readable saved model ({exc}); delete its folder") from exc

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath}: read only here (the versioned entry of that file saves it)")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
