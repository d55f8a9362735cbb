"""The nuclei network's time per tile on each runtime this install has, one thread.

    python bench/bench_network_runtime.py data/01_raw/slides/CMU-1-Small-Region.svs

Reads one ``--size``² level-0 region (the most tissue-dense of a few candidates) and times
``network_runtime.predict_probabilities`` on it: onnxruntime (float32) always; torch float32
and, where the CPU computes it natively, bfloat16 when torch is installed. Prints ms per tile
(median of ``--repeats`` after warm-up) and each against onnxruntime, and how far the
probabilities differ from onnxruntime's (docs/benchmarks.md, *The network without torch*).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from histocluster.segmentation.network_runtime import (
    cpu_has_bfloat16,
    load_nuclei_network,
    predict_probabilities,
    torch_installed,
)
from histocluster.wsi.slides import open_slide


def densest_region(slide: Path, size: int) -> np.ndarray:
    """The darkest of a 4×4 grid of ``size``² level-0 regions (most stained tissue)."""
    with open_slide(str(slide)) as reader:
        width, height = reader.dimensions
        corners = [
            (int(x), int(y))
            for x in np.linspace(0, max(0, width - size), 4)
            for y in np.linspace(0, max(0, height - size), 4)
        ]
        regions = [reader.read_region(corner, 0, (min(size, width), min(size, height))) for corner in corners]
    return min(regions, key=lambda rgb: float(rgb.mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slide", type=Path)
    parser.add_argument("--size", type=int, default=512, help="tile side in px (level 0)")
    parser.add_argument("--mpp", type=float, default=0.5, help="the tile's µm/px as the pass sees it")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rgb = densest_region(args.slide, args.size)

    setups = [("onnxruntime", "float32")]
    if torch_installed():
        import torch

        torch.set_num_threads(1)
        setups.append(("torch", "float32"))
        if cpu_has_bfloat16():
            setups.append(("torch", "bfloat16"))
    results = {}
    for runtime, precision in setups:
        network = load_nuclei_network(runtime=runtime, precision=precision)
        for _ in range(3):
            probabilities = predict_probabilities(network, rgb, args.mpp)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            predict_probabilities(network, rgb, args.mpp)
            times.append(time.perf_counter() - start)
        results[(runtime, precision)] = (1000 * statistics.median(times), probabilities)
    base, reference = results[("onnxruntime", "float32")]
    print(f"{rgb.shape[0]}×{rgb.shape[1]} px at {args.mpp} µm/px, one thread, median of {args.repeats}")
    print(f"{'runtime':12s} {'precision':9s} {'ms/tile':>8s} {'vs onnx':>8s} {'max |Δp|':>9s}")
    for (runtime, precision), (ms, probabilities) in results.items():
        delta = float(np.abs(probabilities - reference).max())
        print(f"{runtime:12s} {precision:9s} {ms:8.1f} {ms / base:7.2f}× {delta:9.2g}")
    if not torch_installed():
        print("(torch is not installed: onnxruntime only)")


if __name__ == "__main__":
    main()
