"""Held-out quality of the nuclei network on every bench set: set-balanced cross-validation.

Every set is split into ``--folds`` folds. Images that come from one source (the tiles of
one CoNSeP image, the tiles of one glioma slide) stay in one fold, and MoNuSeg's images are
spread organ by organ, so each fold holds a share of every set and of every common organ.
For fold k a network is trained (``bench/train_nuclei_net.py``) on all sets less their fold-k
images, and the watershed segmenter with that network scores the fold-k images of every
set, which it never saw. The tables pool the held-out scores of all folds: each image is
scored exactly once, by a network that did not see it — per set, and for MoNuSeg per organ.

With ``--final OUT`` it also trains one more network on everything and writes it to OUT:
the shipped weights were made that way, so the README's figures are these held-out ones,
not scores on training data.

Usage:
    python bench/crossval_nuclei_net.py ../shared/data/bench/{monuseg,consep,cpm15_20x,cpm15_40x,lgg} \\
        --work /tmp/cv [--folds 3] [--epochs 120] [--resolution 0.5] \\
        [--final src/histocluster/segmentation/weights/nuclei_unet.pt] [--train-args "--small-nucleus-um2 30"]

Checkpoints already in ``--work`` are reused, so an interrupted run picks up where it stopped.
``--jobs N`` trains N networks at once (give each ``--threads`` so that N × threads fits the
cores): on two cores ``--jobs 3 --threads 1`` trained three folds in about 45 min.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
    os.environ.setdefault(_var, "1")  # scoring is timed per core; training sets its own threads

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
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


def source_of(image_id: str) -> str:
    """The source an image id was cut from: ``train_10_003`` (a CoNSeP tile) → ``train_10``,
    ``TCGA-DB-5270-R01_1`` (a tile of a glioma region) → ``TCGA-DB-5270``; MoNuSeg and
    CPM-15 images are their own source. Tiles of one source must share a fold, or the
    held-out score would be partly a training score."""
    if re.fullmatch(r"train_\d+_\d+", image_id):
        return image_id.rsplit("_", 1)[0]
    if re.fullmatch(r"TCGA-\w\w-\w{4}-R\d+_\d+", image_id):
        return "-".join(image_id.split("-")[:3])
    return image_id


def balanced_folds(image_ids: list[str], folds: int) -> list[list[str]]:
    """Split ``image_ids`` into ``folds`` groups: sources whole, organ by organ (MoNuSeg's
    TCGA organs; 'other' elsewhere), larger sources first, each to the group with fewest
    images so far (ties to the first), so every fold gets a share of every common organ."""
    sources: dict[str, list[str]] = {}
    for image_id in sorted(image_ids):
        sources.setdefault(source_of(image_id), []).append(image_id)
    groups: list[list[str]] = [[] for _ in range(folds)]
    order = sorted(sources.items(), key=lambda item: (organ(item[1][0]), -len(item[1]), item[0]))
    for _, members in order:
        min(groups, key=len).extend(members)
    return groups


def train_command(sets: list[Path], out: Path, exclude: list[str], args: argparse.Namespace) -> list[str]:
    """The training script's command line for one network."""
    command = [sys.executable, str(TRAIN), *map(str, sets), "--out", str(out), "--epochs", str(args.epochs)]
    command += [
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--channels",
        *map(str, args.channels),
    ]
    command += shlex.split(args.train_args)
    if exclude:
        command += ["--exclude", *exclude]
    return command


def train_all(jobs: list[tuple[Path, list[str]]], sets: list[Path], args: argparse.Namespace) -> None:
    """Train a network for each (checkpoint, held-out ids) not yet in place, ``args.jobs``
    at a time (each with ``args.threads`` threads); stop naming the log of any that fails."""
    pending = [(out, exclude) for out, exclude in jobs if not out.is_file()]
    for out, _ in jobs:
        if out.is_file():
            print(f"{out}: exists, reused", flush=True)
    running: list[tuple[subprocess.Popen, Path]] = []
    failed: list[Path] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            out, exclude = pending.pop(0)
            command = train_command(sets, out, exclude, args)
            print(" ".join(command[:8]), "…", f"({len(exclude)} images held out) → {out.name}", flush=True)
            log = out.with_suffix(".log")
            with log.open("w") as handle:
                running.append((subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT), log))
        process, log = running.pop(0)
        if process.wait():
            failed.append(log)
    if failed:
        raise SystemExit("training failed; see " + ", ".join(map(str, failed)))


def per_set_table(rows: list[dict]) -> str:
    """One line per (set, resolution): images and mean F1 / AJI / PQ."""
    lines = [f"{'set':12s} {'µm/px':>7s} {'images':>6s} {'F1@0.5':>7s} {'AJI':>7s} {'PQ':>7s}"]
    for r in rows:
        lines.append(
            f"{r['set']:12s} {r['resolution']:7.4g} {r['images']:6d} {r['f1']:7.3f} {r['aji']:7.3f} {r['pq']:7.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, nargs="+", help="sets in the bench layout (all are split)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the fold checkpoints")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs=4, default=list(CHANNELS), help="network widths")
    parser.add_argument("--threads", type=int, default=2, help="training threads per network")
    parser.add_argument("--jobs", type=int, default=1, help="networks trained at once (folds in parallel)")
    parser.add_argument("--train-args", default="", help="more options for train_nuclei_net.py")
    parser.add_argument("--resolution", type=float, default=None, help="also score at this µm/px")
    parser.add_argument("--settings", default="{}", help="WatershedSettings as JSON (foreground is network)")
    parser.add_argument("--final", type=Path, default=None, help="then train on everything, write here")
    args = parser.parse_args()

    splits: dict[Path, tuple[float, list[list[str]]]] = {}
    seen: dict[str, Path] = {}
    for bench in args.bench:
        mpp, items = bench_items(bench)
        for image_id, _, _ in items:
            if image_id in seen:
                raise SystemExit(
                    f"image id {image_id!r} is in {seen[image_id]} and {bench}: --exclude needs unique ids"
                )
            seen[image_id] = bench
        splits[bench] = (mpp, balanced_folds([image_id for image_id, _, _ in items], args.folds))
    args.work.mkdir(parents=True, exist_ok=True)
    widths = "-".join(map(str, args.channels))
    tag = re.sub(r"[^\w.-]+", "", args.train_args.replace(" ", "_"))
    folds = []
    for k in range(args.folds):
        fold = {bench: ids[k] for bench, (_, ids) in splits.items()}
        name = f"fold{k + 1}of{args.folds}_{len(args.bench)}sets_seed{args.seed}_e{args.epochs}_c{widths}{tag}.pt"
        folds.append((fold, args.work / name))
        print(
            f"fold {k + 1}/{args.folds} held out: " + "; ".join(f"{b.name} {len(f)}" for b, f in fold.items())
        )
    jobs = [(checkpoint, [i for ids in fold.values() for i in ids]) for fold, checkpoint in folds]
    if args.final:
        jobs.append((args.final, []))
    train_all(jobs, list(args.bench), args)
    held_out: dict[tuple[Path, float | None], list[pd.DataFrame]] = {}
    for k, (fold, checkpoint) in enumerate(folds):
        settings = WatershedSettings(
            **(json.loads(args.settings) | {"foreground": "network", "weights_path": str(checkpoint)})
        )
        cached_network(
            settings.weights_path, settings.runtime, settings.precision
        )  # loading is not per-pixel time
        for bench, ids in fold.items():
            if not ids:
                continue
            for resolution in [None] + ([args.resolution] if args.resolution else []):
                scores, _ = evaluate(bench, partial(segment_nuclei, settings=settings), resolution, ids)
                held_out.setdefault((bench, resolution), []).append(scores.assign(fold=k + 1))
    rows = []
    for (bench, resolution), parts in held_out.items():
        scores = pd.concat(parts, ignore_index=True).sort_values("image_id")
        summary = summarise(scores, bench, resolution or splits[bench][0])
        print(f"\n{bench.name} at {summary['resolution_mpp']:g} µm/px, held out ({args.folds} folds):")
        print(format_summary(scores, summary))
        rows.append(
            {"set": bench.name, "resolution": summary["resolution_mpp"], "images": summary["images"]}
            | {m: summary["mean"][m] for m in ("f1", "aji", "pq")}
        )
    print("\nHeld-out scores per set (each image scored by a network that never saw it):")
    print(per_set_table(rows))
    if args.final:
        print(f"\nfinal network (all images of {', '.join(map(str, args.bench))}): {args.final}")


if __name__ == "__main__":
    main()
