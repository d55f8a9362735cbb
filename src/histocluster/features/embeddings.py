"""The embedding matrix of a set of cells: one float32 row per cell id."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Embeddings:
    """One float32 row per cell: ``matrix[i]`` belongs to ``cell_ids[i]``."""

    cell_ids: np.ndarray
    matrix: np.ndarray
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cell_ids = np.asarray(self.cell_ids, dtype=object)
        if self.matrix.ndim != 2 or len(self.matrix) != len(self.cell_ids):
            raise ValueError(f"{len(self.cell_ids)} cell ids for a matrix of shape {self.matrix.shape}")
        if not self.columns:
            self.columns = [f"e{k}" for k in range(self.matrix.shape[1])]

    def __len__(self) -> int:
        return len(self.cell_ids)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])
