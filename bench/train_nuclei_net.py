"""Train the small nuclei U-Net (``histocluster.segmentation.nuclei_net``) on bench sets.

The shipped weights were made on all five instance sets with small-nucleus weighting and
MoNuSeg and CoNSeP drawn more often (``bench/crossval_nuclei_net.py`` measured this recipe
held out; docs/segmentation.md)::

    python bench/train_nuclei_net.py ../shared/data/bench/{monuseg,consep,cpm15_20x,cpm15_40x,lgg} \
        --out src/histocluster/segmentation/weights/nuclei_unet.pt --epochs 120 --seed 0 --threads 2 \
        --channels 16 32 64 64 --small-nucleus-um2 30 --set-odds 3 2 1 1 1

The script's defaults (``--augment mild``, no small-nucleus weighting, no hard-pixel mining,
equal set odds) are the recipe of the previous weights (MoNuSeg + CoNSeP, kept as
``bench/candidates/nuclei_unet_2sets_previous.pt``). 120 epochs take about 20 min on two
threads with bfloat16 on a CPU with AMX, twice that without (about 55 min on one thread
with three other trainings beside it on two cores).
``--exclude ID ...`` leaves images out (a held-out fold): ``bench/crossval_nuclei_net.py``
uses it to measure quality on images of every set that the network never saw.

Every step draws a batch: each item from a set picked with equal odds (so 13 large
MoNuSeg images weigh as much as 432 small CoNSeP tiles; ``--set-odds`` weighs the sets
otherwise, one number per set in the order given), then an image of that set and a
random window of it, augmented: a right-angle rotation and flip; a resolution drawn from
0.42–0.62 µm/px around each set's own µm/px (scale jitter, so the same weights hold at
the pipeline's 0.5 µm/px whether a slide was scanned at 20× or 40×); the appearance of
other labs and scanners: haematoxylin density × 0.65–1.7 (very dark, crowded nuclei),
eosin and residual × 0.65–1.35, overall darkness (intensity gamma), contrast, focus blur,
sensor noise and JPEG artefacts. Targets are three classes at the sampled resolution:
background, nucleus interior, and the nucleus's outer pixel ring.

Loss: class-weighted cross-entropy in which a nucleus smaller than ``--small-nucleus-um2``
weighs as if it were that large (small dark lymphocytes, spindle and basal nuclei count
as much as large pale ones), half of it the mean over the hardest ``--hard-share`` of the
pixels (online hard-example mining). Without these the first networks (CoNSeP + MoNuSeg,
milder jitter) missed most dark dermal and basal nuclei of the sample slide.
"""

from __future__ import annotations

import argparse
import io
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
from histocluster.segmentation.network_runtime import WORK_MPP, network_bfloat16
from histocluster.segmentation.nuclei_net import CHANNELS, NucleiUNet, export_onnx, image_to_input
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
        od = image_to_input(np.asarray(Image.open(path).convert("RGB")))[0].contiguous()
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
    scale_range: tuple[float, float] = (0.42, 0.62),
    strong: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One augmented batch: a random window of each image at a random resolution near the
    work resolution (drawn in ``scale_range`` µm/px around each set's own µm/px, so a set's
    nuclei keep their true physical size ± the jitter), rotated/flipped, then the appearance
    of slides from other labs and scanners: haematoxylin/eosin/residual density jitter
    (haematoxylin up to ``1 + 2 × stain_jitter`` so that very dark, crowded nuclei are seen),
    overall darkness, contrast and gamma of the intensities, focus blur, sensor noise and JPEG
    compression. With ``strong`` False: the first networks' milder recipe (density ±
    ``stain_jitter``, darkness 0.8–1.2, blur, 0.45–0.58 µm/px). Returns the optical densities (n, 3, crop, crop), the classes (n, crop, crop)
    and the instance labels (n, 1, crop, crop; 0 on background)."""
    n = len(batch)
    if not strong:
        scale_range = (0.45, 0.58)
    out_od = torch.empty((n, 3, crop, crop))
    out_labels = torch.empty((n, 1, crop, crop))
    hed_from_rgb = torch.from_numpy(_HED_FROM_RGB.astype(np.float32))
    rgb_from_hed = torch.from_numpy(_RGB_FROM_HED.astype(np.float32))
    for i, item in enumerate(batch):
        h, w = item.od.shape[-2:]
        largest = min(h, w) * item.mpp / crop  # the coarsest resolution whose window fits
        finest = scale_range[0] * WORK_MPP / 0.5
        if largest < finest:
            raise SystemExit(
                f"{item.name}: {h}×{w} px is smaller than a {crop} px crop at {finest:.2f} µm/px"
            )
        work = min(rng.uniform(*scale_range) * WORK_MPP / 0.5, largest)
        window = min(math.ceil(crop * work / item.mpp), h, w)
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
        low = 1 - stain_jitter
        scale = np.array(
            [
                rng.uniform(low, 1 + (2 if strong else 1) * stain_jitter),
                rng.uniform(low, 1 + stain_jitter),
                rng.uniform(low, 1 + stain_jitter),
            ]
        )
        shift = rng.uniform(-0.05, 0.05, size=3)
        hed = hed * torch.from_numpy(scale.astype(np.float32))[:, None, None]
        hed = hed + torch.from_numpy(shift.astype(np.float32))[:, None, None]
        image = torch.einsum("dhw,dc->chw", hed, rgb_from_hed)
        image = image * float(
            rng.uniform(0.75, 1.35) if strong else rng.uniform(0.8, 1.2)
        )  # darkness (gamma)
        if strong and rng.random() < 0.5:  # contrast of the intensities around their mean
            intensity = torch.exp(-image.clamp(0, 5.5))
            mean = intensity.mean()
            intensity = ((intensity - mean) * float(rng.uniform(0.7, 1.4)) + mean).clamp(1 / 256, 1)
            image = -torch.log(intensity)
        out_od[i], out_labels[i] = image.clamp(0, 5.5), label
    if rng.random() < 0.3:  # focus
        out_od = _blur(out_od, float(rng.uniform(0.3, 1.2 if strong else 1.0)))
    if strong and rng.random() < 0.2:  # sensor noise, in intensity
        intensity = torch.exp(-out_od) + torch.randn_like(out_od) * float(rng.uniform(0.005, 0.03))
        out_od = -torch.log(intensity.clamp(1 / 256, 1))
    if strong and rng.random() < 0.3:  # JPEG artefacts
        out_od = _jpeg(out_od, int(rng.integers(30, 91)))
    classes = targets(out_labels)
    return out_od, classes, out_labels


def _blur(od: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of a (n, 3, h, w) batch."""
    radius = max(2, math.ceil(2 * sigma))  # 2 up to σ = 1: the first recipe's kernel
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)
    od = F.conv2d(F.pad(od, (radius, radius, 0, 0), mode="reflect"), kernel, groups=3)
    return F.conv2d(F.pad(od, (0, 0, radius, radius), mode="reflect"), kernel.transpose(-1, -2), groups=3)


def _jpeg(od: torch.Tensor, quality: int) -> torch.Tensor:
    """Each image of a (n, 3, h, w) optical-density batch through JPEG at ``quality``."""
    out = torch.empty_like(od)
    for i, image in enumerate(od):
        rgb = (torch.exp(-image) * 256 - 1).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
        out[i] = image_to_input(np.asarray(Image.open(buffer).convert("RGB")))[0]
    return out


def _nucleus_areas(labels: torch.Tensor) -> torch.Tensor:
    """Area in px of the nucleus each pixel belongs to (n, h, w); 0 on background."""
    areas = torch.zeros(labels.shape[0], *labels.shape[-2:])
    for i, label in enumerate(labels[:, 0]):
        _, inverse, counts = torch.unique(label, return_inverse=True, return_counts=True)
        areas[i] = torch.where(label > 0, counts[inverse].float(), 0.0)
    return areas


def pixel_loss(
    logits: torch.Tensor,
    classes: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor,
    reference_px: float,
    hard_share: float,
) -> torch.Tensor:
    """Class-weighted cross-entropy where each nucleus smaller than ``reference_px`` weighs
    as if it had that area (up to 3× per pixel: small dark lymphocytes and spindle nuclei
    count as much as large pale ones), plus, with ``hard_share`` > 0, the mean of the
    hardest ``hard_share`` of the pixels (online hard-example mining), half and half."""
    loss = F.cross_entropy(logits, classes, weight=class_weights, reduction="none")
    if reference_px > 0:  # nucleus areas (from the instance ``labels``) only when they weigh
        areas = _nucleus_areas(labels)
        loss = loss * torch.where(areas > 0, (reference_px / areas.clamp(min=1)).sqrt().clamp(1, 3), 1.0)
    mean = loss.mean()
    if hard_share <= 0:
        return mean
    hardest = loss.flatten().topk(max(1, int(loss.numel() * hard_share))).values
    return 0.5 * mean + 0.5 * hardest.mean()


def draw_batch(
    sets: list[list[BenchImage]], size: int, rng: np.random.Generator, odds: list[float] | None = None
) -> list[BenchImage]:
    """``size`` images: each from a set drawn with ``odds`` (relative; default equal), then
    an image of that set."""
    p = None if odds is None else np.asarray(odds, dtype=float) / sum(odds)
    picks = []
    for _ in range(size):
        k = rng.integers(len(sets)) if p is None else rng.choice(len(sets), p=p)
        images = sets[int(k)]
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
    parser.add_argument(
        "--small-nucleus-um2",
        type=float,
        default=0.0,
        help="nuclei below this area weigh as if this size (0: off)",
    )
    parser.add_argument(
        "--augment", choices=["strong", "mild"], default="mild", help="appearance augmentation recipe"
    )
    parser.add_argument(
        "--hard-share", type=float, default=0.0, help="share of hardest pixels mined (0: off)"
    )
    parser.add_argument(
        "--set-odds",
        type=float,
        nargs="+",
        default=None,
        help="relative odds of drawing from each set, in the order of the sets (default: equal)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--channels",
        type=int,
        nargs=4,
        default=list(CHANNELS),
        help="widths at full, 1/2, 1/4, 1/8 resolution",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="convolutions in bfloat16 (weights stay float32); auto = where the CPU has AMX/AVX512-BF16 (2× faster)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    if args.set_odds is not None and (len(args.set_odds) != len(args.bench) or min(args.set_odds) <= 0):
        parser.error(f"--set-odds needs one positive number per set ({len(args.bench)})")
    exclude = frozenset(args.exclude)
    sets = [load_set(bench, exclude) for bench in args.bench]
    total = args.epochs * args.steps
    network = NucleiUNet(tuple(args.channels))
    optimiser = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=total)
    weights = torch.tensor([1.0, 1.0, args.boundary_weight])
    reference = args.small_nucleus_um2 / WORK_MPP**2  # px at the work resolution
    bfloat16 = network_bfloat16(args.precision)
    for bench, images in zip(args.bench, sets, strict=True):
        print(f"{bench}: {len(images)} images at {images[0].mpp} µm/px")
    print(
        f"{args.epochs} epochs × {args.steps} steps of {args.batch}; channels {tuple(args.channels)}; "
        f"{'bfloat16' if bfloat16 else 'float32'}"
    )
    start = time.perf_counter()
    network.train()
    for epoch in range(args.epochs):
        losses = []
        for _ in range(args.steps):
            x, y, labels = augment(
                draw_batch(sets, args.batch, rng, args.set_odds),
                args.crop,
                rng,
                args.stain_jitter,
                strong=args.augment == "strong",
            )
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
                logits = network(x)
            loss = pixel_loss(logits.float(), y, labels, weights, reference, args.hard_share)
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
        "small_nucleus_um2": args.small_nucleus_um2,
        "hard_share": args.hard_share,
        "augment": args.augment,
        "set_odds": args.set_odds,
        "bfloat16": bfloat16,
        "command": " ".join(["python", *sys.argv]),
        "work_mpp": WORK_MPP,
    }
    torch.save(checkpoint, args.out)
    # The same network for installs without torch (runtime onnxruntime).
    onnx_file = export_onnx(args.out, args.out.with_suffix(".onnx"))
    print(f"wrote {args.out} and {onnx_file}")


if __name__ == "__main__":
    main()
