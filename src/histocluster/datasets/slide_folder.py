"""A Kedro dataset for a folder of slides."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from histocluster.wsi.slides import SLIDE_SUFFIXES, SlideSource, discover_slides

logger = logging.getLogger(__name__)


class SlideFolderDataset(AbstractDataset[None, list[SlideSource]]):
    """The slides in one folder, as :class:`~histocluster.wsi.slides.SlideSource` items.

    Loading lists files only; pixels are read later, tile by tile, by the stages that
    need them. The dataset is read-only: slides are inputs.

    Example catalog entry::

        raw_slides:
          type: histocluster.datasets.SlideFolderDataset
          path: data/01_raw/slides
    """

    def __init__(self, *, path: str, metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> list[SlideSource]:
        """The slides in the folder; none when the folder does not exist (the tiling
        pipeline then stops with one clear message naming what to do)."""
        if not self._path.is_dir():
            logger.warning(
                "Slide folder %s does not exist; create it and put slides (%s) in it",
                self._path,
                ", ".join(sorted(SLIDE_SUFFIXES)),
            )
            return []
        return discover_slides(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(f"SlideFolderDataset({self._path}) is read-only: slides are inputs")

    def _exists(self) -> bool:
        return self._path.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
