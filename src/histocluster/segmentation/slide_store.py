"""Each slide's segmentation pass kept on disk, keyed by everything that made it, so that a
run killed after k of n slides redoes only the other slides, and a slide added to a
finished cohort is the only one segmented.

A slide's result (:class:`~histocluster.segmentation.tile_pass.SlideResult`: tile quality,
cells with their measurements and pixel features, ResNet rows, contact-sheet previews,
label maps) is saved as ``<folder>/<slide_id>/<key>.pkl`` the moment the slide is done,
written under a temporary name and renamed (:mod:`histocluster.atomic_files`). The key is
a SHA-256 over

* the slide file: its size and the bytes of its first and last 4 MiB (a copy or a
  ``dvc pull`` keeps the key; another file under the same name does not);
* the slide's row of the slide table and its rows of the tile table (µm/px, grid, boxes);
* the pass settings and the segmentation parameters (any change invalidates: a changed
  threshold, weights path, feature set or tile size segments again);
* the code and weights that compute it: the source files of the ``segmentation``,
  ``features`` and ``wsi`` packages and the network's weights file.

A result with failed tiles is not kept (the failure may not happen again). The newest
three keys of each slide are kept; older ones are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from histocluster.atomic_files import atomic_path, is_partial

logger = logging.getLogger(__name__)

#: Bytes read from each end of a slide file for its identity.
EDGE_BYTES = 4 << 20
#: Results kept per slide (newest first).
KEEP_PER_SLIDE = 3
#: The packages whose code makes a slide's result.
CODE_PACKAGES = ("segmentation", "features", "wsi")


def file_identity(path: str | Path) -> str:
    """Size and the first and last :data:`EDGE_BYTES` of a file, hashed."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(EDGE_BYTES))
        if size > 2 * EDGE_BYTES:
            handle.seek(size - EDGE_BYTES)
            digest.update(handle.read(EDGE_BYTES))
    return digest.hexdigest()


def code_identity(extra_files: Iterable[str | Path] = ()) -> str:
    """A hash of the source of :data:`CODE_PACKAGES` and of ``extra_files`` (weights)."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    files = sorted(p for package in CODE_PACKAGES for p in (root / package).rglob("*.py"))
    for path in [*files, *(Path(f) for f in extra_files)]:
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _frame_digest(frame: pd.DataFrame) -> str:
    frame = frame.reset_index(drop=True)
    frame = frame[sorted(frame.columns)]
    return hashlib.sha256(
        frame.to_json(orient="split", date_format="iso", double_precision=15).encode()
    ).hexdigest()


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, arrays: present
        return False


def slide_key(slide: dict, tiles: pd.DataFrame, settings: str, code: str) -> str:
    """The key of one slide's result (see the module doc). ``settings`` is the pass
    settings and parameters as text (JSON); ``code`` is :func:`code_identity`."""
    # Missing is missing: a column that other slides fill reads back NaN, not None.
    row = {k: (None if _missing(v) else v) for k, v in slide.items() if k != "path"}
    parts = [
        file_identity(slide["path"]),
        json.dumps(row, sort_keys=True, default=str),
        _frame_digest(tiles),
        settings,
        code,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class SlideStore:
    """Slide results on disk, ``<folder>/<slide_id>/<key>.pkl``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, slide_id: str, key: str) -> Path:
        return self.folder / slide_id / f"{key}.pkl"

    def load(self, slide_id: str, key: str):
        """The stored result, or None (not stored, or unreadable: then segmented again)."""
        path = self.path(slide_id, key)
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                return pickle.load(handle)
        except Exception as exc:  # a damaged file costs a recomputation, not the run
            logger.warning(
                "Slide %s: stored result %s unreadable (%s); segmenting again", slide_id, path, exc
            )
            return None

    def save(self, slide_id: str, key: str, result) -> Path:
        path = self.path(slide_id, key)
        with atomic_path(path) as partial, partial.open("wb") as handle:
            pickle.dump(result, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self._prune(path.parent, keep=path)
        return path

    @staticmethod
    def _prune(folder: Path, keep: Path) -> None:
        stored = sorted(
            (p for p in folder.glob("*.pkl") if not is_partial(p) and p != keep),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in stored[KEEP_PER_SLIDE - 1 :]:
            old.unlink(missing_ok=True)
