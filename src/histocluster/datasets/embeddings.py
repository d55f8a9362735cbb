"""A Kedro dataset for cell embeddings: a float32 matrix that is memory-mapped on load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractVersionedDataset, DatasetError, Version

from histocluster.features.embeddings import Embeddings


class EmbeddingsDataset(AbstractVersionedDataset[Embeddings, Embeddings]):
    """:class:`~histocluster.features.morphology.Embeddings` as a folder::

        <filepath>/cell_ids.parquet   one row per cell, in matrix order
        <filepath>/matrix.npy         float32, cells × dims
        <filepath>/columns.json       the dims' names

    ``matrix.npy`` is opened with ``mmap_mode="r"``, so loading 10⁶ × 2048 embeddings
    costs no memory until rows are read, and they are never held twice. Saving writes
    a temporary folder and renames it, so an interrupted save leaves nothing that looks
    finished. Versioned like Kedro's own datasets (``versioned: true``)::

        cell_embeddings:
          type: histocluster.datasets.EmbeddingsDataset
          filepath: data/04_feature/cell_embeddings
          versioned: true
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        mmap: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            filepath=PurePosixPath(filepath), version=version, exists_function=self._folder_exists
        )
        self._mmap = mmap
        self.metadata = metadata

    @staticmethod
    def _folder_exists(path: str) -> bool:
        return (Path(path) / "matrix.npy").is_file()

    def load(self) -> Embeddings:
        folder = Path(self._get_load_path())
        try:
            ids = pd.read_parquet(folder / "cell_ids.parquet")["cell_id"].to_numpy()
            matrix = np.load(folder / "matrix.npy", mmap_mode="r" if self._mmap else None)
            columns = json.loads((folder / "columns.json").read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(f"{folder}: not a readable embeddings folder ({exc})") from exc
        return Embeddings(ids, matrix, columns)

    def save(self, data: Embeddings) -> None:
        folder = Path(self._get_save_path())
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        pd.DataFrame({"cell_id": pd.Series(data.cell_ids, dtype="object")}).to_parquet(
            partial / "cell_ids.parquet"
        )
        np.save(partial / "matrix.npy", np.asarray(data.matrix, dtype=np.float32))
        (partial / "columns.json").write_text(json.dumps(list(data.columns)))
        if folder.exists():
            shutil.rmtree(folder)
        partial.rename(folder)

    def _exists(self) -> bool:
        try:
            return self._folder_exists(str(self._get_load_path()))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version, "mmap": self._mmap}
