"""How clearly the scale estimate finds the true µm/px: bench sets and slides.

For each bench set (known µm/px ``m``), a few of its images are treated as a slide that
says nothing: :func:`histocluster.segmentation.scale_estimate.estimate_mpp` compares
``m / 2``, ``m`` and ``2 m``; the line says each candidate's share of sure nucleus pixels,
which won, and by how much over the runner-up (the estimate needs
``scale_estimate.MIN_MARGIN``). For each slide given, the pipeline's own
``estimate_slide_mpp`` runs on its tissue (whatever its metadata says).

Usage:
    python bench/bench_scale_estimate.py ../shared/data/bench/{monuseg,consep,cpm15_20x,cpm15_40x,lgg,crc} \\
        --slides ../shared/data/slides/tcga-cr-7395-01a-01-ts1.svs data/01_raw/slides/CMU-1-Small-Region.svs \\
        [--images 4] [--weights path.pt]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from histocluster.pipelines.tiling.nodes import _thumbnail_downsample
from histocluster.segmentation.scale_estimate import (
    MIN_MARGIN,
    estimate_mpp,
    estimate_slide_mpp,
    network_nucleus_probability,
)
from histocluster.wsi.settings import TilingParams
from histocluster.wsi.slides import open_slide


def spread(items: list[Path], count: int) -> list[Path]:
    """``count`` items spread evenly over the sorted list (first and last included)."""
    if len(items) <= count:
        return items
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def margin(shares: dict[float, float]) -> tuple[float, float]:
    """(winner, winner's share / runner-up's)."""
    (best, first), (_, second) = sorted(shares.items(), key=lambda item: item[1], reverse=True)[:2]
    return best, first / second if second else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, nargs="*", help="bench sets (info.json + images/)")
    parser.add_argument("--slides", type=Path, nargs="*", default=[])
    parser.add_argument("--images", type=int, default=4, help="images per set")
    parser.add_argument("--weights", default=None, help="network file, .pt or .onnx (default: shipped)")
    args = parser.parse_args()
    probability = network_nucleus_probability(args.weights)

    print(f"{'set':12s} {'true':>6s}  shares at ½×, 1×, 2× the true µm/px     winner  margin  verdict")
    for bench in args.bench:
        mpp = float(json.loads((bench / "info.json").read_text())["mpp"])
        images = spread(sorted((bench / "images").iterdir()), args.images)
        regions = [np.asarray(Image.open(path).convert("RGB")) for path in images]
        candidates = (mpp / 2, mpp, mpp * 2)
        estimate = estimate_mpp(regions, probability, candidates)
        shares = list(estimate.sure_share.values())
        best, ratio = margin(estimate.sure_share)
        verdict = "true" if estimate.mpp == mpp else ("no estimate" if estimate.mpp is None else "WRONG")
        print(
            f"{bench.name:12s} {mpp:6.3g}  "
            + " / ".join(f"{share:.3f}" for share in shares).ljust(36)
            + f"  {best:6.3g}  {ratio:5.2f}×  {verdict}"
        )
    tiling = TilingParams()
    for slide in args.slides:
        with open_slide(str(slide)) as reader:
            # the thumbnail the tiling pipeline makes for a slide without µm/px
            width, height = reader.dimensions
            row = {"mpp_x": tiling.default_mpp, "width": width, "height": height}
            estimate, count = estimate_slide_mpp(
                reader,
                reader.thumbnail(_thumbnail_downsample(row, tiling)),
                tiling.tissue,
                weights_path=args.weights,
            )
        best, ratio = margin(estimate.sure_share)
        print(f"{slide.name}: {count} regions; {estimate.evidence()} (winner by {ratio:.2f}×)")
    print(f"(an estimate needs the winner ≥ {MIN_MARGIN}× the runner-up)")


if __name__ == "__main__":
    main()
