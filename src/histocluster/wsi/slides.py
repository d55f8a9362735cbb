"""Reading whole-slide images and plain images through one interface.

Two readers share the :class:`SlideReader` interface:

* :class:`OpenSlideReader` for every format OpenSlide reads (Aperio .svs, Hamamatsu
  .ndpi/.vms, generic and Philips .tif/.tiff, MIRAX .mrxs, Leica .scn, Ventana .bif,
  DICOM folders, ...).
* :class:`ImageReader`, the fallback for plain RGB images (.png, .jpg, .tif) that
  OpenSlide rejects. It presents the image as a one-level pyramid.

Coordinates passed to :meth:`SlideReader.read_region` are level-0 pixels, as in
OpenSlide. Regions are returned as RGB ``uint8`` arrays with transparent areas
(outside the scanned region or outside the image) composited on white.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from histocluster.errors import UserInputError
from histocluster.wsi.scale import SCALE_TABLE_NAME, resolve_scale

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: File suffixes OpenSlide may read (DICOM folders are recognised separately).
OPENSLIDE_SUFFIXES = frozenset(
    {".svs", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".tif", ".tiff", ".svslide", ".bif", ".dcm"}
)
#: File suffixes the plain-image fallback reads.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
#: Every suffix that makes a file a slide candidate.
SLIDE_SUFFIXES = OPENSLIDE_SUFFIXES | IMAGE_SUFFIXES

WHITE = 255


class SlideReadError(RuntimeError):
    """A slide could not be opened or read; the message names the file and the cause."""


class DuplicateSlideIdError(UserInputError):
    """Two slides share an id; the message names the id and the files."""


@dataclass(frozen=True)
class SlideSource:
    """A slide found on disk: a stable, readable id and the path to open."""

    slide_id: str
    path: str


def best_level(level_downsamples: Sequence[float], downsample: float) -> int:
    """Index of the coarsest pyramid level whose downsample does not exceed
    ``downsample`` (level 0 when none does), so reading there and resampling never
    upsamples."""
    best = 0
    for level, ds in enumerate(level_downsamples):
        if ds <= downsample * (1 + 1e-6):
            best = level
    return best


class SlideReader:
    """Interface shared by the OpenSlide reader and the plain-image fallback."""

    reader_name: str = "abstract"
    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: tuple[float, float] | None
    objective_power: float | None
    vendor: str | None

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is not larger than ``downsample``."""
        return best_level(self.level_downsamples, downsample)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 array of ``size`` (w, h) at ``level``, top-left at level-0 ``location``."""
        raise NotImplementedError

    def read_scaled(self, box: tuple[int, int, int, int], out_size: tuple[int, int]) -> np.ndarray:
        """Read level-0 ``box`` (x, y, w, h) and resample it to ``out_size`` (w, h).

        Uses the coarsest pyramid level that is still at least as fine as the output,
        so a 0.5 µm/px tile from a 0.25 µm/px slide reads level 0 and a thumbnail reads
        the smallest level that suffices.
        """
        x, y, w, h = box
        downsample = min(w / out_size[0], h / out_size[1])
        level = self.best_level_for_downsample(downsample)
        ds = self.level_downsamples[level]
        read_w = max(1, int(np.ceil(w / ds)))
        read_h = max(1, int(np.ceil(h / ds)))
        region = self.read_region((x, y), level, (read_w, read_h))
        if (read_w, read_h) == tuple(out_size):
            return region
        image = Image.fromarray(region).resize(tuple(out_size), Image.Resampling.LANCZOS)
        return np.asarray(image)

    def thumbnail(self, downsample: float, max_read: int = 2048, progress_from: int = 16) -> np.ndarray:
        """The whole slide at ``downsample`` (level-0 pixels per thumbnail pixel).

        Read in blocks of at most ``max_read`` × ``max_read`` pixels of the pyramid
        level used, so memory stays bounded (~16 MB a block) whatever the slide's size
        and however few levels it has. A slide without a level near ``downsample`` (a
        large single-level TIFF) is read from a finer level, which takes minutes: from
        ``progress_from`` blocks on, a progress bar naming the slide shows how far it is.
        """
        from tqdm.auto import tqdm

        width, height = self.dimensions
        out_w, out_h = max(1, round(width / downsample)), max(1, round(height / downsample))
        scale_x, scale_y = width / out_w, height / out_h
        level = self.best_level_for_downsample(min(scale_x, scale_y))
        level_ds = self.level_downsamples[level]
        block = max(16, int(max_read * level_ds / max(scale_x, scale_y)))
        origins = [(ox, oy) for oy in range(0, out_h, block) for ox in range(0, out_w, block)]
        name = getattr(self, "path", Path("slide")).name
        if len(origins) >= progress_from:
            logger.info(
                "%s: reading the thumbnail (1/%.0f) from level %d (1/%.0f) in %d blocks of ≤ %d px",
                name,
                downsample,
                level,
                level_ds,
                len(origins),
                max_read,
            )
        thumb = np.empty((out_h, out_w, 3), dtype=np.uint8)
        with tqdm(
            origins,
            desc=f"Thumbnail of {name}",
            unit="block",
            disable=len(origins) < progress_from,
            leave=False,
        ) as blocks:
            for ox, oy in blocks:
                bw, bh = min(block, out_w - ox), min(block, out_h - oy)
                x0, y0 = round(ox * scale_x), round(oy * scale_y)
                x1, y1 = round((ox + bw) * scale_x), round((oy + bh) * scale_y)
                box = (x0, y0, max(1, x1 - x0), max(1, y1 - y0))
                thumb[oy : oy + bh, ox : ox + bw] = self.read_scaled(box, (bw, bh))
        return thumb

    def close(self) -> None:
        """Release the file handle."""

    def __enter__(self) -> SlideReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA array on white (OpenSlide returns premultiplied-free RGBA)."""
    alpha_channel = rgba[..., 3]
    if alpha_channel.min() == 255:  # opaque: the common case inside the scanned area
        return np.ascontiguousarray(rgba[..., :3])
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgb * alpha + WHITE * (1.0 - alpha)).astype(np.uint8)


def _float_or_none(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) and out > 0 else None


class OpenSlideReader(SlideReader):
    """A slide read by OpenSlide."""

    reader_name = "openslide"

    def __init__(self, path: str | Path) -> None:
        import openslide

        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as exc:  # includes unsupported format
            raise SlideReadError(f"{self.path}: OpenSlide cannot open it ({exc})") from exc
        props = self._slide.properties
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        mpp_x = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
        mpp_y = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_Y))
        self.mpp = (mpp_x, mpp_y or mpp_x) if mpp_x else None
        self.objective_power = _float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        import openslide

        try:
            region = self._slide.read_region(tuple(int(v) for v in location), level, tuple(size))
        except openslide.OpenSlideError as exc:
            raise SlideReadError(
                f"{self.path}: reading {size} at {location} level {level} failed ({exc})"
            ) from exc
        return _rgba_to_rgb(np.asarray(region))

    def close(self) -> None:
        self._slide.close()


# Plain TIFF/PNG resolution units: 2 = inch, 3 = centimetre.
_UM_PER_UNIT = {2: 25_400.0, 3: 10_000.0}
# A resolution tag outside this range is a placeholder (72 dpi, 1 dpi), not a scan.
_PLAUSIBLE_MPP = (0.05, 20.0)


class ImageReader(SlideReader):
    """A plain RGB image (.png, .jpg, .tif) presented as a one-level slide.

    The image is decoded on first read and kept while the reader is open; plain images
    are small next to whole-slide images. µm/px comes from the TIFF resolution tags
    when they hold a plausible scanning resolution, otherwise it is unknown.
    """

    reader_name = "image"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with Image.open(self.path) as image:
                image.verify()
            self._image = Image.open(self.path)
        except Exception as exc:  # PIL raises many types for broken files
            raise SlideReadError(f"{self.path}: not a readable image ({exc})") from exc
        width, height = self._image.size
        self.level_dimensions = ((width, height),)
        self.level_downsamples = (1.0,)
        self.mpp = self._mpp_from_tags(self._image)
        self.objective_power = None
        self.vendor = None
        self._pixels: np.ndarray | None = None

    @staticmethod
    def _mpp_from_tags(image: Image.Image) -> tuple[float, float] | None:
        tags = getattr(image, "tag_v2", None)
        if not tags:
            return None
        unit = tags.get(296, 2)
        xres, yres = _float_or_none(tags.get(282)), _float_or_none(tags.get(283))
        if unit not in _UM_PER_UNIT or not xres:
            return None
        mpp_x = _UM_PER_UNIT[unit] / xres
        mpp_y = _UM_PER_UNIT[unit] / (yres or xres)
        low, high = _PLAUSIBLE_MPP
        if not (low <= mpp_x <= high and low <= mpp_y <= high):
            return None
        return (mpp_x, mpp_y)

    def _array(self) -> np.ndarray:
        if self._pixels is None:
            try:
                image = self._image
                if image.mode in ("RGBA", "LA", "P"):
                    rgba = np.asarray(image.convert("RGBA"))
                    self._pixels = _rgba_to_rgb(rgba)
                else:
                    self._pixels = np.asarray(image.convert("RGB"))
            except Exception as exc:
                raise SlideReadError(f"{self.path}: decoding the image failed ({exc})") from exc
        return self._pixels

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if level != 0:
            raise ValueError(f"{self.path}: plain images have one level, asked for level {level}")
        pixels = self._array()
        height, width = pixels.shape[:2]
        x, y = (int(v) for v in location)
        w, h = (int(v) for v in size)
        out = np.full((h, w, 3), WHITE, dtype=np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = pixels[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        self._image.close()
        self._pixels = None


def open_slide(path: str | Path) -> SlideReader:
    """Open ``path`` with OpenSlide, or with the plain-image reader when OpenSlide cannot.

    Raises:
        SlideReadError: neither reader can open the file; the message names the file
            and what each reader said.
    """
    path = Path(path)
    if not path.exists():
        raise SlideReadError(f"{path}: no such file or folder")
    if path.is_dir():
        # A DICOM slide is a folder of .dcm instances; OpenSlide opens it through any one.
        instances = sorted(p for p in path.iterdir() if p.suffix.lower() == ".dcm")
        if not instances:
            raise SlideReadError(f"{path}: a folder without .dcm files is not a slide")
        try:
            return OpenSlideReader(instances[0])
        except SlideReadError as exc:
            raise SlideReadError(f"{path}: DICOM folder not readable ({exc})") from exc
    suffix = path.suffix.lower()
    errors = []
    if suffix in OPENSLIDE_SUFFIXES:
        try:
            return OpenSlideReader(path)
        except SlideReadError as exc:
            errors.append(str(exc))
    if suffix in IMAGE_SUFFIXES:
        try:
            return ImageReader(path)
        except SlideReadError as exc:
            errors.append(str(exc))
    if not errors:
        raise SlideReadError(f"{path}: unsupported file type {suffix or '(none)'}")
    raise SlideReadError("; ".join(errors))


def _is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir())


def slugify(name: str) -> str:
    """A readable, filesystem-safe id: Unicode-normalised (NFKC), lower case, letters and
    digits of any script kept (``测试`` stays ``测试``, ``Übersicht`` → ``übersicht``), runs of
    anything else become '-'."""
    text = unicodedata.normalize("NFKC", name).casefold()
    slug = re.sub(r"[^\w.-]+", "-", text).strip("-._")
    return slug or "slide"


def _file_hash(name: str) -> str:
    return hashlib.sha1(unicodedata.normalize("NFC", name).encode()).hexdigest()[:6]


def unique_slide_ids(names: Sequence[str]) -> list[str]:
    """One id per file name, unique and stable: :func:`slugify` of the name without its
    suffix; where several names give one id, the suffix is added (``a.svs``, ``a.tif`` →
    ``a-svs``, ``a-tif``); where that still collides (``CMU 1.svs``, ``CMU-1.svs``), six hex
    digits of a hash of the file name are (``cmu-1-svs-3f2a9c``), so an id depends on its
    own file name and on which names collide with it, never on listing order."""

    def stem_and_suffix(name: str) -> tuple[str, str]:
        path = Path(name)
        return (path.stem, path.suffix) if path.suffix.lower() in SLIDE_SUFFIXES else (name, "")

    first = [slugify(stem_and_suffix(n)[0]) for n in names]
    seen = Counter(first)
    second = [
        ids if seen[ids] == 1 else slugify(f"{ids}-{stem_and_suffix(n)[1].lstrip('.')}").rstrip("-")
        for n, ids in zip(names, first, strict=True)
    ]
    seen = Counter(second)
    return [ids if seen[ids] == 1 else f"{ids}-{_file_hash(n)}" for n, ids in zip(names, second, strict=True)]


def discover_slides(folder: str | Path) -> list[SlideSource]:
    """Every slide candidate in ``folder`` (not recursive), with unique, stable ids
    (:func:`unique_slide_ids`: ``CMU-1-Small-Region.svs`` → ``cmu-1-small-region``).
    MIRAX data folders (the folder beside an .mrxs file) are not slides of their own;
    DICOM folders are.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"slide folder {folder} does not exist")
    mrxs_stems = {p.stem for p in folder.glob("*.mrxs")}
    candidates = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if path.name not in mrxs_stems and _is_dicom_folder(path):
                candidates.append(path)
        elif path.suffix.lower() in SLIDE_SUFFIXES:
            candidates.append(path)
        elif path.name == SCALE_TABLE_NAME:
            logger.info("Reading per-slide µm/px from %s", path)
        else:
            logger.info("Ignoring %s: not a slide or image file type", path)
    ids = unique_slide_ids([p.name for p in candidates])
    return [SlideSource(slide_id=i, path=_portable(p)) for i, p in zip(ids, candidates, strict=True)]


def require_unique_ids(slides: pd.DataFrame, what: str = "slides table") -> None:
    """Stop before a repeated ``slide_id`` reaches a later stage (outputs of two slides
    would overwrite each other).

    Raises:
        DuplicateSlideIdError: names each repeated id and the files behind it.
    """
    repeated = slides[slides["slide_id"].duplicated(keep=False)]
    if len(repeated):
        listing = "; ".join(
            f"{slide_id}: {', '.join(map(str, group['path'])) if 'path' in group else len(group)}"
            for slide_id, group in repeated.groupby("slide_id")
        )
        raise DuplicateSlideIdError(
            f"The {what} has repeated slide ids ({listing}); rename the files or rerun the tiling pipeline"
        )


def _portable(path: Path) -> str:
    """``path`` relative to the working directory (the Kedro project root) when it lies
    inside it, so tables that record it stay valid on another machine or checkout."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


#: Columns of the slide table (the "slides" contract of docs/architecture.md).
SLIDE_COLUMNS = [
    "slide_id",
    "path",
    "reader",
    "vendor",
    "width",
    "height",
    "mpp_x",
    "mpp_y",
    "mpp_source",
    "mpp_evidence",
    "objective_power",
    "levels",
    "level_downsamples",
    "status",
    "error",
]


def describe_slide(
    reader: SlideReader,
    source: SlideSource,
    default_mpp: float,
    table_mpp: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One slide-table row for an opened slide.

    Its µm/px comes from :func:`histocluster.wsi.scale.resolve_scale`: the person's table
    entry ``table_mpp``, the metadata, the objective power, or ``default_mpp``, and
    ``mpp_source`` says which; the caller logs the guesses.
    """
    width, height = reader.dimensions
    mpp_x, mpp_y, mpp_source = resolve_scale(reader.mpp, reader.objective_power, table_mpp, default_mpp)
    return {
        "slide_id": source.slide_id,
        "path": source.path,
        "reader": reader.reader_name,
        "vendor": reader.vendor,
        "width": int(width),
        "height": int(height),
        "mpp_x": float(mpp_x),
        "mpp_y": float(mpp_y),
        "mpp_source": mpp_source,
        "mpp_evidence": None,
        "objective_power": reader.objective_power,
        "levels": reader.level_count,
        "level_downsamples": list(reader.level_downsamples),
        "status": "ok",
        "error": None,
    }


def failed_slide_row(source: SlideSource, error: str) -> dict[str, Any]:
    """A slide-table row for a slide that could not be read."""
    row: dict[str, Any] = dict.fromkeys(SLIDE_COLUMNS)
    row.update(slide_id=source.slide_id, path=source.path, status="error", error=error)
    row["level_downsamples"] = []
    return row


def picture_thumbnail(path: str | Path, thumbnail: np.ndarray, min_side: int = 800) -> np.ndarray:
    """``thumbnail`` (the one the tissue mask was found on), or, when its longer side is under
    ``min_side`` pixels and the slide has more, the slide read again at the downsample that
    gives ``min_side`` (never finer than level 0): pictures of small slides (a region
    exported as an image, a TMA core) show the tissue, not enlarged blocks of 4 µm pixels."""
    if max(thumbnail.shape[:2]) >= min_side:
        return thumbnail
    with open_slide(path) as reader:
        longest = max(reader.dimensions)
        if longest <= max(thumbnail.shape[:2]):
            return thumbnail
        return reader.thumbnail(max(1.0, longest / min_side))
