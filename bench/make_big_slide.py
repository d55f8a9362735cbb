"""Build a large pyramidal TIFF from real tissue, for whole-slide benchmarks.

The canvas (``--size`` px square at ``--mpp`` µm/px) is filled block by block (2048 px)
with patches cut from real slides (default: the sample slide, CMU-1-Small-Region), each
resampled to ``--mpp``, turned by a random multiple of 90° and maybe mirrored; blocks
outside an ellipse covering about 70 % of the canvas are glass, as on a scanned section.
Patches are taken only where the source has tissue. The patches repeat; so that repeated
patches do not give identical cells (the morphology features do not change under turning),
each block is enlarged by a random 1.0–1.15× and its colour shifted by up to ±6 % per
channel (``--no-jitter``: exact repeats, nuclei at their true physical size).

The file is a tiled BigTIFF (512 px tiles, JPEG) with levels downsampled 4× down to
< 2048 px, and TIFF resolution tags that OpenSlide reports as ``openslide.mpp-x/-y``
(generic-tiff). Level 0 is written tile by tile from a generator, so a 40k² slide needs
no 4.8 GB array; the memory used is the 4×-downsampled level plus a few blocks.

Usage:
    python bench/make_big_slide.py --out /tmp/big20k.tif --size 20000 [--mpp 0.25]
        [--source ../shared/data/slides/cmu-1-small-region.svs] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import cv2
import numpy as np
import tifffile

from histocluster.wsi.slides import open_slide

BLOCK = 2048  # level-0 px per mosaic block
TILE = 512  # TIFF tile
GLASS = (242, 242, 240)
DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "../shared/data/slides/cmu-1-small-region.svs"


def load_source(path: Path, mpp: float) -> np.ndarray:
    """The whole source slide at level 0, resampled to ``mpp`` µm/px (it must say its own)."""
    with open_slide(path) as reader:
        if reader.mpp is None:
            raise SystemExit(f"{path}: its µm/px is not in the metadata; use a slide that says it")
        width, height = reader.level_dimensions[0]
        pixels = reader.read_region((0, 0), 0, (width, height))
        scale = reader.mpp[0] / mpp
    size = (round(width * scale), round(height * scale))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


def tissue_corners(source: np.ndarray, rng: np.random.Generator, count: int = 64) -> list[tuple[int, int]]:
    """Top-left corners of the ``count`` most tissue-filled of random ``BLOCK``² patches."""
    grey = cv2.cvtColor(source, cv2.COLOR_RGB2GRAY)
    tissue = (grey < 215).astype(np.float32)
    height, width = grey.shape
    if height < BLOCK or width < BLOCK:
        raise SystemExit(
            f"the source is {width}×{height} px at this µm/px: smaller than one {BLOCK} px block"
        )
    candidates = [
        (int(rng.integers(0, height - BLOCK + 1)), int(rng.integers(0, width - BLOCK + 1)))
        for _ in range(count * 50)
    ]
    share = [tissue[y : y + BLOCK : 16, x : x + BLOCK : 16].mean() for y, x in candidates]
    ranked = [
        corner for corner, s in sorted(zip(candidates, share, strict=True), key=lambda c: -c[1]) if s > 0.3
    ]
    if not ranked:
        raise SystemExit("no patch of the source is one-third tissue")
    return ranked[:count]  # the most tissue-filled patches


class Mosaic:
    """The canvas, block by block (deterministic for a seed)."""

    def __init__(self, sources: list[np.ndarray], size: int, seed: int, jitter: bool = True) -> None:
        rng = np.random.default_rng(seed)
        self.jitter = jitter
        self.size = size
        self.sources = sources
        self.corners = [tissue_corners(s, rng) for s in sources]
        self.blocks = -(-size // BLOCK)
        centre = (self.blocks - 1) / 2
        yy, xx = np.mgrid[: self.blocks, : self.blocks]
        radius = max(centre, 0.5) + 0.5
        self.tissue = ((yy - centre) / (radius * 0.95)) ** 2 + ((xx - centre) / (radius * 0.8)) ** 2 <= 1.0
        self.choice = rng.integers(0, 1 << 30, size=(self.blocks, self.blocks))

    @functools.lru_cache(maxsize=64)  # noqa: B019  (one mosaic per process)
    def block(self, by: int, bx: int) -> np.ndarray:
        if not self.tissue[by, bx]:
            return np.broadcast_to(np.array(GLASS, np.uint8), (BLOCK, BLOCK, 3))
        code = int(self.choice[by, bx])
        source = code % len(self.sources)
        y, x = self.corners[source][(code >> 4) % len(self.corners[source])]
        if not self.jitter:
            patch = self.sources[source][y : y + BLOCK, x : x + BLOCK]
        else:
            # Each block a little enlarged (1.0–1.15×) and its colour shifted (±6 % per
            # channel), so that repeated patches do not give identical cells.
            rng = np.random.default_rng(code)
            side = round(BLOCK / rng.uniform(1.0, 1.15))
            dy, dx = rng.integers(0, BLOCK - side + 1, size=2)
            crop = self.sources[source][y + dy : y + dy + side, x + dx : x + dx + side]
            patch = cv2.resize(crop, (BLOCK, BLOCK), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            patch = np.clip(patch * rng.uniform(0.94, 1.06, size=3) + rng.uniform(-6, 6), 0, 255)
            patch = patch.astype(np.uint8)
        patch = np.rot90(patch, k=(code >> 12) % 4)
        return np.ascontiguousarray(patch[:, ::-1] if (code >> 14) % 2 else patch)

    def region(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Level-0 pixels of a box (glass past the canvas edge)."""
        out = np.empty((height, width, 3), np.uint8)
        out[:] = GLASS
        for by in range(y // BLOCK, min(self.blocks, -(-(y + height) // BLOCK))):
            for bx in range(x // BLOCK, min(self.blocks, -(-(x + width) // BLOCK))):
                y0, x0 = max(y, by * BLOCK), max(x, bx * BLOCK)
                y1 = min(y + height, (by + 1) * BLOCK, self.size)
                x1 = min(x + width, (bx + 1) * BLOCK, self.size)
                if y1 > y0 and x1 > x0:
                    out[y0 - y : y1 - y, x0 - x : x1 - x] = self.block(by, bx)[
                        y0 - by * BLOCK : y1 - by * BLOCK, x0 - bx * BLOCK : x1 - bx * BLOCK
                    ]
        return out

    def tiles(self):
        for y in range(0, self.size, TILE):
            for x in range(0, self.size, TILE):
                yield self.region(y, x, TILE, TILE)

    def downsampled(self, factor: int) -> np.ndarray:
        """The whole canvas shrunk by ``factor`` (area average), built block by block."""
        small = -(-self.size // factor)
        out = np.empty((small, small, 3), np.uint8)
        step = BLOCK
        for y in range(0, self.size, step):
            for x in range(0, self.size, step):
                box = self.region(y, x, step, step)
                part = cv2.resize(box, (step // factor, step // factor), interpolation=cv2.INTER_AREA)
                h, w = min(step // factor, small - y // factor), min(step // factor, small - x // factor)
                out[y // factor : y // factor + h, x // factor : x // factor + w] = part[:h, :w]
        return out


def write_pyramid(mosaic: Mosaic, out: Path, mpp: float, quality: int = 90) -> list[tuple[int, int]]:
    """Writes the pyramid; returns the level sizes."""
    per_cm = 1e4 / mpp
    options = {
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "resolutionunit": "CENTIMETER",
    }
    sizes = [(mosaic.size, mosaic.size)]
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    with tifffile.TiffWriter(partial, bigtiff=True) as tif:
        tif.write(
            mosaic.tiles(),
            shape=(mosaic.size, mosaic.size, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            resolution=(per_cm, per_cm),
            subfiletype=0,
            **options,
        )
        level = mosaic.downsampled(4)
        factor = 4
        while True:
            sizes.append(level.shape[1::-1])
            tif.write(
                level,
                tile=(TILE, TILE),
                resolution=(per_cm / factor, per_cm / factor),
                subfiletype=1,
                **options,
            )
            if max(level.shape[:2]) < 2048:
                break
            level = cv2.resize(
                level, (-(-level.shape[1] // 4), -(-level.shape[0] // 4)), interpolation=cv2.INTER_AREA
            )
            factor *= 4
    partial.replace(out)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=20_000, help="level-0 width = height, px")
    parser.add_argument("--mpp", type=float, default=0.25, help="µm/px of level 0")
    parser.add_argument("--source", type=Path, nargs="+", default=[DEFAULT_SOURCE])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-jitter",
        action="store_true",
        help="repeat patches exactly (turned and mirrored only): many cells are then exact duplicates",
    )
    args = parser.parse_args()
    if not 2048 <= args.size <= 200_000:
        raise SystemExit("--size: 2048 to 200,000 px")
    start = time.perf_counter()
    sources = [load_source(path.resolve(), args.mpp) for path in args.source]
    mosaic = Mosaic(sources, args.size, args.seed, jitter=not args.no_jitter)
    sizes = write_pyramid(mosaic, args.out, args.mpp)
    tissue_share = mosaic.tissue.mean()
    print(
        f"{args.out}: {args.size:,}² px at {args.mpp} µm/px "
        f"({args.size * args.mpp / 1000:.1f} mm square), levels {sizes}, "
        f"tissue blocks {tissue_share:.0%}, {args.out.stat().st_size / 1e6:.0f} MB, "
        f"{time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
