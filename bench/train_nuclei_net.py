"""Train the small nuclei U-Net (``histocluster.segmentation.nuclei_net``) on bench sets.

The shipped weights were made with::

    python bench/train_nuclei_net.py ../shared/data/bench/monuseg ../shared/data/bench/consep \
        --out src/histocluster/segmentation/segmenter.py/weights/nuclei_unet.pt --epochs 120 --seed 0 --threads 2

on CPU (two threads, about 15 min). ``--exclude ID ...`` leaves images out (a held-out
fold): ``bench/crossval_nuclei_net.py`` uses it to measure quality on MoNuSeg images the
network never saw.

Every step draws a batch: each item from a set picked with equal odds (so 13 large
MoNuSeg images weigh as much as 432 small CoNSeP tiles), then an image of that set and a
random window of it, augmented: a right-angle rotation and flip, a
resolution drawn around the network's work resolution (so the same weights hold from
about 0.45 to 0.58 µm/px after resampling), a haematoxylin/eosin/residual density jitter
(scanner and stain differences), brightness and a slight blur. Targets are three classes
at the sampled resolution: background, nucleus interior, and the nucleus's outer pixel
ring. Loss: class-weighted cross-entropy.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from histocluster.segmentation.evaluation import bench_items
from histocluster.segmentation.nuclei_net import CHANNELS, WORK_MPP, NucleiUNet, image_to_input
from histocluster.wsi.stain import _HED_FROM_RGB, _RGB_FROM_HED


@dataclass
class BenchImage:
    """One training image: optical density (3, h, w), instance map (1, h, w), µm/px."""

    name: str
    od: torch.Tensor
    labels: torch.Tensor
    mpp: float


def load_set(bench: Path, exclude: frozenset[str] = frozenset()) -> list[BenchImage]:
    """The images of a bench set that have instance maps, less those whose id is in ``exclude``."""
    mpp, items = bench_items(bench)
    images = []
    for image_id, path, truth in items:
        if image_id in exclude:
            continue
        od = image_to_input(np.asarray(Image.open(path).convert("RGB")))[0]
        labels = torch.from_numpy(np.asarray(Image.open(truth)).astype(np.float32)[None])
        images.append(BenchImage(image_id, od, labels, mpp))
    if not images:
        raise SystemExit(f"{bench}: no images with instance maps left to train on")
    return images


def targets(labels: torch.Tensor) -> torch.Tensor:
    """Class per pixel (n, h, w): 0 background, 1 interior, 2 outer ring of a nucleus."""
    high = F.max_pool2d(labels, 3, stride=1, padding=1)
    low = -F.max_pool2d(-labels, 3, stride=1, padding=1)
    edge = (high != labels) | (low != labels)
    inside = labels > 0
    classes = inside.long()
    classes[inside & edge] = 2
    return classes[:, 0]


def augment(
    batch: list[BenchImage],
    crop: int,
    rng: np.random.Generator,
    stain_jitter: float = 0.35,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented batch: a random window of each image, at a random resolution near the
    work resolution, rotated/flipped, stain-jittered, darkened or lightened, sometimes blurred."""
    n = len(batch)
    out_od = torch.empty((n, 3, crop, crop))
    out_labels = torch.empty((n, 1, crop, crop))
    hed_from_rgb = torch.from_numpy(_HED_FROM_RGB.astype(np.float32))
    rgb_from_hed = torch.from_numpy(_RGB_FROM_HED.astype(np.float32))
    for i, item in enumerate(batch):
        work = rng.uniform(0.45, 0.58) * WORK_MPP / 0.5
        window = math.ceil(crop * work / item.mpp)  # source pixels that become ``crop`` at ``work``
        h, w = item.od.shape[-2:]
        if window > min(h, w):
            raise SystemExit(f"{item.name}: {h}×{w} px is smaller than a {crop} px crop at {work:.2f} µm/px")
        y, x = int(rng.integers(0, h - window + 1)), int(rng.integers(0, w - window + 1))
        image = item.od[None, :, y : y + window, x : x + window]
        label = item.labels[None, :, y : y + window, x : x + window]
        mode = "area" if window > crop else "bilinear"
        image = F.interpolate(image, size=(crop, crop), mode=mode)[0]
        label = F.interpolate(label, size=(crop, crop), mode="nearest")[0]
        k = int(rng.integers(4))
        image, label = torch.rot90(image, k, (1, 2)), torch.rot90(label, k, (1, 2))
        if rng.random() < 0.5:
            image, label = image.flip(2), label.flip(2)
        # Stain jitter in H/E/residual density space, then back to RGB optical density.
        hed = torch.einsum("chw,cd->dhw", image, hed_from_rgb)
        scale = torch.from_numpy(rng.uniform(1 - stain_jitter, 1 + stain_jitter, size=3).astype(np.float32))
        shift = torch.from_numpy(rng.uniform(-0.05, 0.05, size=3).astype(np.float32))
        hed = hed * scale[:, None, None] + shift[:, None, None]
        image = torch.einsum("dhw,dc->chw", hed, rgb_from_hed)
        image = image * float(rng.uniform(0.8, 1.2))  # overall darkness
        image = image.clamp(0, 5.5)
        out_od[i], out_labels[i] = image, label
    if rng.random() < 0.3:  # focus
        sigma = float(rng.uniform(0.3, 1.0))
        radius = 2
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(t**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
        out_od = F.conv2d(F.pad(out_od, (radius, radius, 0, 0), mode="reflect"), kernel, groups=3)
        out_od = F.conv2d(
            F.pad(out_od, (0, 0, radius, radius), mode="reflect"), kernel.transpose(-1, -2), groups=3
        )
    return out_od, targets(out_labels)


def draw_batch(sets: list[list[BenchImage]], size: int, rng: np.random.Generator) -> list[BenchImage]:
    """``size`` images: each from a set drawn with equal odds, then an image of that set."""
    picks = []
    for _ in range(size):
        images = sets[int(rng.integers(len(sets)))]
        picks.append(images[int(rng.integers(len(images)))])
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, nargs="+", help="training sets in the bench layout")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--exclude", nargs="*", default=[], help="image ids to leave out (held-out fold)")
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--steps", type=int, default=27, help="steps per epoch")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=104, help="training crop in px (multiple of 8)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--boundary-weight", type=float, default=2.0)
    parser.add_argument("--stain-jitter", type=float, default=0.35, help="± relative H/E/residual density")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--channels",
        type=int,
        nargs=4,
        default=list(CHANNELS),
        help="widths at full, 1/2, 1/4, 1/8 resolution",
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    exclude = frozenset(args.exclude)
    sets = [load_set(bench, exclude) for bench in args.bench]
    total = args.epochs * args.steps
    network = NucleiUNet(tuple(args.channels))
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=total)
    weights = torch.tensor([1.0, 1.0, args.boundary_weight])
    for bench, images in zip(args.bench, sets, strict=True):
        print(f"{bench}: {len(images)} images at {images[0].mpp} µm/px")
    print(f"{args.epochs} epochs × {args.steps} steps of {args.batch}; channels {tuple(args.channels)}")
    start = time.perf_counter()
    network.train()
    for epoch in range(args.epochs):
        losses = []
        for _ in range(args.steps):
            x, y = augment(draw_batch(sets, args.batch, rng), args.crop, rng, args.stain_jitter)
            loss = F.cross_entropy(network(x), y, weight=weights)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        print(
            f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  {time.perf_counter() - start:6.0f} s",
            flush=True,
        )
        if not math.isfinite(np.mean(losses)):
            raise SystemExit("loss is not finite")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "channels": list(network.channels),
        "state_dict": network.state_dict(),
        "trained_on": [
            {"set": bench.name, "images": [image.name for image in images]}
            for bench, images in zip(args.bench, sets, strict=True)
        ],
        "epochs": args.epochs,
        "seed": args.seed,
        "stain_jitter": args.stain_jitter,
        "command": " ".join(["python", *sys.argv]),
        "work_mpp": WORK_MPP,
    }
    torch.save(checkpoint, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
