"""Train the small nuclei U-Net (``histocluster.segmenters.nuclei_net``) on a bench set.

The shipped weights were made with::

    python bench/train_nuclei_net.py ../shared/data/bench/consep \
        --out src/histocluster/segmenters/weights/nuclei_unet.pt

on CPU (two threads). Training uses only the given set (CoNSeP for the shipped file), so
MoNuSeg stays unseen for ``bench/bench_segmentation_quality.py``.

Every step draws a batch of tiles and augments them: a right-angle rotation and flip, a
resolution drawn around the network's work resolution (so the same weights hold from
about 0.45 to 0.58 µm/px after resampling), a haematoxylin/eosin/residual density jitter
(scanner and stain differences), brightness and a slight blur. Targets are three classes
at the sampled resolution: background, nucleus interior, and the nucleus's outer pixel
ring. Loss: class-weighted cross-entropy.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from histocluster.segmenters.nuclei_net import CHANNELS, WORK_MPP, NucleiUNet, image_to_input
from histocluster.stain import _HED_FROM_RGB, _RGB_FROM_HED


def load_set(bench: Path) -> tuple[float, torch.Tensor, torch.Tensor]:
    """µm/px, optical densities (n, 3, h, w) and instance maps (n, 1, h, w) of a bench set."""
    mpp = float(json.loads((bench / "info.json").read_text())["mpp"])
    images, labels = [], []
    for path in sorted((bench / "images").iterdir()):
        truth = bench / "instances" / f"{path.stem}.png"
        if not truth.is_file():
            continue
        images.append(image_to_input(np.asarray(Image.open(path).convert("RGB")))[0])
        labels.append(np.asarray(Image.open(truth)).astype(np.float32)[None])
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) != 1:
        raise SystemExit(f"{bench}: images of several sizes {sizes}; this script wants one size")
    return mpp, torch.stack(images), torch.from_numpy(np.stack(labels))


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
    od: torch.Tensor,
    labels: torch.Tensor,
    mpp: float,
    crop: int,
    rng: np.random.Generator,
    stain_jitter: float = 0.35,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented batch at a random resolution near the work resolution."""
    work = rng.uniform(0.45, 0.58) * WORK_MPP / 0.5
    size = round(od.shape[-1] * mpp / work)
    od = F.interpolate(od, size=(size, size), mode="area")
    labels = F.interpolate(labels, size=(size, size), mode="nearest")
    if size < crop:
        raise SystemExit(f"tiles too small: {size} px at {work:.2f} µm/px < crop {crop}")
    n = od.shape[0]
    out_od = torch.empty((n, 3, crop, crop))
    out_labels = torch.empty((n, 1, crop, crop))
    hed_from_rgb = torch.from_numpy(_HED_FROM_RGB.astype(np.float32))
    rgb_from_hed = torch.from_numpy(_RGB_FROM_HED.astype(np.float32))
    for i in range(n):
        y, x = rng.integers(0, size - crop + 1, size=2)
        image = od[i, :, y : y + crop, x : x + crop]
        label = labels[i, :, y : y + crop, x : x + crop]
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, help="training set in the bench layout")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--crop", type=int, default=104, help="training crop in px (multiple of 8)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--boundary-weight", type=float, default=2.0)
    parser.add_argument("--stain-jitter", type=float, default=0.35, help="± relative H/E/residual density")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    mpp, od, labels = load_set(args.bench)
    n = od.shape[0]
    steps_per_epoch = max(1, n // args.batch)
    total = args.epochs * steps_per_epoch
    network = NucleiUNet(CHANNELS)
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=total)
    weights = torch.tensor([1.0, 1.0, args.boundary_weight])
    print(f"{n} tiles at {mpp} µm/px; {args.epochs} epochs × {steps_per_epoch} steps; {CHANNELS}")
    start = time.perf_counter()
    network.train()
    for epoch in range(args.epochs):
        order = rng.permutation(n)
        losses = []
        for step in range(steps_per_epoch):
            index = torch.from_numpy(order[step * args.batch : (step + 1) * args.batch])
            x, y = augment(od[index], labels[index], mpp, args.crop, rng, args.stain_jitter)
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
        "trained_on": str(args.bench.name),
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
