"""``.h5ad`` files (AnnData), saved all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from histocluster.atomic_files import atomic_path


class AnnDataDataset(AbstractDataset):
    """An :class:`anndata.AnnData` in one ``.h5ad`` file (written under a temporary name and
    renamed when complete)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self):
        import anndata

        return anndata.read_h5ad(self._filepath)

    def save(self, data) -> None:
        with atomic_path(self._filepath) as partial:
            data.write_h5ad(partial)

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
