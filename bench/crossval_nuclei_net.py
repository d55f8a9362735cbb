"""Held-out quality of the nuclei network when MoNuSeg images are also used for training.

The 13 MoNuSeg development images are split into folds, balanced by organ. For each fold
a network is trained (``bench/train_nuclei_net.py``) on the extra sets (e.g. CoNSeP) plus
the other folds' MoNuSeg images, and the watershed segmenter with that network scores the
fold's images, which it never saw. The table pools the held-out scores of all folds: each
image is scored exactly once, by a network that did not see it.

With ``--final OUT`` it then trains one more network on everything (all MoNuSeg images
and the extra sets) and writes it to OUT: the shipped weights were made that way, so
their MoNuSeg figures in the README are these held-out ones, not scores on training data.

Usage:
    python bench/crossval_nuclei_net.py ../shared/data/bench/monuseg ../shared/data/bench/consep \\
        --work /tmp/cv [--folds 3] [--epochs 120] [--resolution 0.5] \\
        [--final src/histocluster/segmentation/segmenter.py/weights/nuclei_unet.pt]

Checkpoints already in ``--work`` are reused, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # scoring is timed per core; training sets its own threads

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from histocluster.segmentation.evaluation import bench_items, evaluate, format_summary, organ, summarise  # noqa: E402
from histocluster.segmentation.nuclei_net import CHANNELS  # noqa: E402
from histocluster.segmentation.settings import WatershedSettings  # noqa: E402
from histocluster.segmentation.watershed import cached_network, segment_nuclei  # noqa: E402

TRAIN = Path(__file__).with_name("train_nuclei_net.py")


def organ_folds(image_ids: list[str], folds: int) -> list[list[str]]:
    """Split ``image_ids`` into ``folds`` groups: organ by organ, each image to the smallest
    group so far (ties to the first), so every fold gets a share of every common organ."""
    groups: list[list[str]] = [[] for _ in range(folds)]
    for image_id in sorted(image_ids, key=lambda i: (organ(i), i)):
        min(groups, key=len).append(image_id)
    return groups


def train(sets: list[Path], out: Path, exclude: list[str], args: argparse.Namespace) -> None:
    """Run the training script unless ``out`` already exists."""
    if out.is_file():
        print(f"{out}: exists, reused", flush=True)
        return
    command = [sys.executable, str(TRAIN), *map(str, sets), "--out", str(out), "--epochs", str(args.epochs)]
    command += [
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--channels",
        *map(str, args.channels),
    ]
    if exclude:
        command += ["--exclude", *exclude]
    print(" ".join(command), flush=True)
    log = out.with_suffix(".log")
    with log.open("w") as handle:
        if subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode:
            raise SystemExit(f"training failed; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, help="set that is split into folds (MoNuSeg)")
    parser.add_argument("extra", type=Path, nargs="*", help="sets always trained on (CoNSeP)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the fold checkpoints")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs=4, default=list(CHANNELS), help="network widths")
    parser.add_argument("--threads", type=int, default=2, help="training threads")
    parser.add_argument("--resolution", type=float, default=None, help="also score at this µm/px")
    parser.add_argument("--settings", default="{}", help="WatershedSettings as JSON (foreground is network)")
    parser.add_argument("--final", type=Path, default=None, help="then train on everything, write here")
    args = parser.parse_args()

    mpp, items = bench_items(args.bench)
    folds = organ_folds([image_id for image_id, _, _ in items], args.folds)
    args.work.mkdir(parents=True, exist_ok=True)
    sets = [args.bench, *args.extra]
    resolutions = [None] + ([args.resolution] if args.resolution else [])
    held_out: dict[float | None, list[pd.DataFrame]] = {r: [] for r in resolutions}
    for k, fold in enumerate(folds):
        print(f"fold {k + 1}/{len(folds)} held out: {', '.join(fold)}", flush=True)
        widths = "-".join(map(str, args.channels))
        checkpoint = args.work / f"fold{k + 1}of{len(folds)}_seed{args.seed}_e{args.epochs}_c{widths}.pt"
        train(sets, checkpoint, fold, args)
        settings = WatershedSettings(
            **(json.loads(args.settings) | {"foreground": "network", "weights_path": str(checkpoint)})
        )
        cached_network(settings.weights_path)  # loading is not per-pixel time
        for resolution in resolutions:
            scores, _ = evaluate(args.bench, partial(segment_nuclei, settings=settings), resolution, fold)
            held_out[resolution].append(scores.assign(fold=k + 1))
    for resolution in resolutions:
        scores = pd.concat(held_out[resolution], ignore_index=True).sort_values("image_id")
        summary = summarise(scores, args.bench, resolution or mpp)
        print(f"\nHeld-out scores, {len(folds)} folds (each image scored by a network that never saw it):")
        print(format_summary(scores, summary))
    if args.final:
        print(f"\nfinal network on all images of {', '.join(map(str, sets))}", flush=True)
        train(sets, args.final, [], args)
        print(f"wrote {args.final}")


if __name__ == "__main__":
    main()
