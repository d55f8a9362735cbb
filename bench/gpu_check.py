"""The GPU path in one short run: speed of each GPU stage and one real `kedro run --env gpu`.

Run through ``bench/gpu_check.sh`` (which installs the GPU extra first and exits 0 without
an NVIDIA GPU). Each step runs on its own, prints its figures or its error, and the next
step runs anyway:

1. Cellpose-SAM (cellpose 4, bfloat16) on real 512² tiles of the sample slide at
   0.5 µm/px, with a randomly initialised checkpoint (speed only: the masks mean nothing;
   no 1.2 GB download): tiles per second after one warm-up batch.
2. The ResNet-50 embedder (bfloat16) on 224² crops, random weights: crops per second.
3. cuML PCA, UMAP, KMeans and HDBSCAN on synthetic cells
   (``bench/bench_clustering_scale.py --device gpu``).
4. ``kedro run --env gpu`` on the sample slide in a copy of the project, with the two
   random checkpoints: wall seconds per stage and the run's exit status.

``--device cpu --quick`` runs the same code on the CPU with tiny sizes, to check the script
itself where there is no GPU (the figures then mean nothing).

Usage:
    python bench/gpu_check.py [--device cuda|cpu] [--quick] [--cells 100000] [--tiles 16]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "01_raw" / "slides" / "CMU-1-Small-Region.svs"


def step(name: str):
    """Run the decorated step at once, print its result or its error, never stop."""

    def run(function):
        print(f"\n=== {name}", flush=True)
        start = time.perf_counter()
        try:
            function()
            print(f"--- {name}: done in {time.perf_counter() - start:.1f} s", flush=True)
        except Exception:  # noqa: BLE001 — a GPU check reports every failure and goes on
            print(f"--- {name}: FAILED after {time.perf_counter() - start:.1f} s", flush=True)
            traceback.print_exc()
            FAILED.append(name)
        return function

    return run


FAILED: list[str] = []


def sample_tiles(count: int, size: int) -> list[np.ndarray]:
    """``count`` tissue tiles of ``size``² px at 0.5 µm/px from the sample slide (level 0 is
    0.499 µm/px, so level-0 pixels are used as they are)."""
    import openslide

    with openslide.OpenSlide(str(SAMPLE)) as slide:
        width, height = slide.dimensions
        tiles = []
        for y in range(0, height - size, size):
            for x in range(0, width - size, size):
                rgb = np.asarray(slide.read_region((x, y), 0, (size, size)).convert("RGB"))
                if (rgb.mean(axis=-1) < 200).mean() > 0.5:  # mostly tissue
                    tiles.append(rgb)
    if not tiles:
        raise RuntimeError(f"{SAMPLE}: no tissue tile of {size}² px")
    return [tiles[k % len(tiles)] for k in range(count)]


def random_cellpose_checkpoint(folder: Path) -> Path:
    """Cellpose-SAM's readout weights, randomly initialised (the ViT stays random too)."""
    import torch
    from cellpose.vit import CPSAM

    torch.manual_seed(0)
    path = folder / "cpsam_random.pt"
    state = {k: v for k, v in CPSAM().state_dict().items() if not k.startswith("encoder.")}
    torch.save(state, path)
    return path


def random_resnet_weights(folder: Path) -> Path:
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = folder / "resnet50_random.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (to check the script on a CPU)")
    parser.add_argument("--cells", type=int, default=100_000, help="synthetic cells for cuML")
    parser.add_argument("--tiles", type=int, default=16, help="tiles for Cellpose-SAM")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    tile_size, tiles, crops, cells = (128, 2, 8, 2_000) if args.quick else (512, args.tiles, 1024, args.cells)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    checkpoints: dict[str, Path] = {}
    print(f"device {args.device}{' (quick)' if args.quick else ''}; work folder {work}")

    @step("Cellpose-SAM, bfloat16, real tiles")
    def _cellpose():
        from histocluster.segmentation.cellpose import CellposeSegmenter, CellposeSettings

        checkpoints["cellpose"] = random_cellpose_checkpoint(work)
        segmenter = CellposeSegmenter(
            CellposeSettings(pretrained_model=str(checkpoints["cellpose"]), gpu=gpu)
        )
        print(
            f"network dtype {segmenter.model.net.dtype}, device {next(segmenter.model.net.parameters()).device}"
        )
        batch = sample_tiles(tiles, tile_size)
        segmenter.segment(batch[:2], mpp=0.5)  # warm-up
        _sync(gpu)
        start = time.perf_counter()
        labels = segmenter.segment(batch, mpp=0.5)
        _sync(gpu)
        seconds = time.perf_counter() - start
        print(f"{len(batch)} tiles of {tile_size}² px: {seconds:.2f} s, {len(batch) / seconds:.2f} tiles/s")
        assert [label.shape for label in labels] == [(tile_size, tile_size)] * len(batch)

    @step("ResNet-50 embedder, bfloat16")
    def _resnet():
        from histocluster.features.resnet import ResNetEmbedder
        from histocluster.features.settings import ResNetSettings

        checkpoints["resnet"] = random_resnet_weights(work)
        embedder = ResNetEmbedder(
            ResNetSettings(weights_path=str(checkpoints["resnet"]), device=args.device, batch_size=256)
        )
        batch = (np.random.default_rng(0).random((min(crops, 256), 224, 224, 3)) * 255).astype(np.uint8)
        embedder.forward(batch[:8])  # warm-up
        _sync(gpu)
        start, done = time.perf_counter(), 0
        while done < crops:
            features = embedder.forward(batch)
            done += len(batch)
        _sync(gpu)
        seconds = time.perf_counter() - start
        print(
            f"{done} crops of 224² px: {seconds:.2f} s, {done / seconds:.0f} crops/s; features {features.shape}"
        )

    @step("clustering on synthetic cells (cuML on the GPU)")
    def _clustering():
        command = [
            sys.executable,
            str(ROOT / "bench" / "bench_clustering_scale.py"),
            "--sizes",
            str(cells),
            "--stages",
            "pca,umap,kmeans,hdbscan",
            "--device",
            "gpu" if gpu else "cpu",
        ]
        subprocess.run(command, check=True, timeout=300)

    @step("kedro run --env gpu on the sample slide")
    def _kedro_run():
        if not {"cellpose", "resnet"} <= checkpoints.keys():
            raise RuntimeError("the checkpoints of steps 1 and 2 are missing")
        project = work / "project"
        shutil.copytree(
            ROOT,
            project,
            ignore=shutil.ignore_patterns(".venv*", ".git", "data", "results", "build", "__pycache__"),
        )
        slides = project / "data" / "01_raw" / "slides"
        slides.mkdir(parents=True)
        os.symlink(SAMPLE.resolve(), slides / SAMPLE.name)
        params = (
            f"segmentation.cellpose.pretrained_model={checkpoints['cellpose']},"
            f"segmentation.cell_features.resnet50.weights_path={checkpoints['resnet']},"
            f"clustering.device={'gpu' if gpu else 'cpu'}"
        )
        if args.quick:
            params += ",tiling.max_tiles=2"
        env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
        for pipeline in ("prep", "clustering", "classification", "annotation"):
            start = time.perf_counter()
            done = subprocess.run(
                [str(Path(sys.executable).parent / "kedro"), "run", "--env", "gpu", f"--pipelines={pipeline}",
                 "--params", params],
                cwd=project, env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            print(f"{pipeline:15s} {time.perf_counter() - start:7.1f} s  exit {done.returncode}", flush=True)
            if done.returncode:
                print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
                raise RuntimeError(f"kedro run --env gpu --pipelines={pipeline} exited {done.returncode}")

    shutil.rmtree(work, ignore_errors=True)
    print("\nall steps passed" if not FAILED else f"\nFAILED: {', '.join(FAILED)}")
    sys.exit(1 if FAILED else 0)


def _sync(gpu: bool) -> None:
    if gpu:
        import torch

        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
