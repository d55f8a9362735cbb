"""A small cell-type CNN learnt from another typed set (CRCHistoPhenotypes), for the
transfer experiment of ``bench/bench_cell_type_model.py --type-net``.

Issue 15 (b) asks that names given on some images carry over to others nearly as well as
naming those images would; the hand-made embedding limits that (docs/benchmarks.md). This
script makes the kind of features a pretrained network would give, from public typed data
that is *not* the bench set scored: CRCHistoPhenotypes' nucleus points (70 colorectal
images at 20×, 0.55 µm/px; epithelial, fibroblast, inflammatory, others). Each point gets
a 40 × 40 crop (20 µm) at the pipeline's 0.5 µm/px; a four-stage CNN (24-48-96-128
channels, global average pool, 128 features) learns the type with class-balanced,
label-smoothed cross-entropy, augmented with right-angle rotations, flips, ±6 px shifts and
a random stain change (HED × 0.7–1.3, ±0.03, gamma 0.8–1.25).
The shipped ``typenet`` embedder (``src/histocluster/features/weights/type_net.onnx``) was
made so (40 epochs: 13 min on 2 cores)::

    python bench/train_type_net.py ../shared/data/bench/crc --epochs 40 --out /tmp/type_net.pt \
        --export src/histocluster/features/weights/type_net.onnx
    python bench/bench_cell_type_model.py ../shared/data/bench/consep --type-net /tmp/type_net.pt

``--validate N`` keeps N images out and prints their macro-F1 after every epoch.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import hed2rgb, rgb2hed
from sklearn.metrics import f1_score

from histocluster.features.type_net import CROP, WORK_MPP, build_type_net, export_onnx, to_input

SHIFT = 6  # training crops are cut from CROP + 2 * SHIFT windows


def resampled(path: Path, mpp: float) -> tuple[np.ndarray, float]:
    """The image at WORK_MPP and the factor its pixel coordinates are multiplied by."""
    image = Image.open(path).convert("RGB")
    s = mpp / WORK_MPP
    size = (round(image.width * s), round(image.height * s))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR)), s


def windows(rgb: np.ndarray, centres: np.ndarray, size: int) -> np.ndarray:
    """``size`` × ``size`` windows centred on ``centres`` (x, y), the image mirrored at its edges."""
    padded = np.pad(rgb, ((size, size), (size, size), (0, 0)), mode="reflect")
    out = np.empty((len(centres), size, size, 3), np.uint8)
    for i, (x, y) in enumerate(np.rint(centres).astype(int) + size - size // 2):
        out[i] = padded[y : y + size, x : x + size]
    return out


def augment(batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((len(batch), CROP, CROP, 3), np.float32)
    for i, window in enumerate(batch):
        ox, oy = rng.integers(0, 2 * SHIFT + 1, 2)
        a = window[oy : oy + CROP, ox : ox + CROP].astype(np.float32) / 255
        hed = rgb2hed(a) * rng.uniform(0.7, 1.3, 3) + rng.uniform(-0.03, 0.03, 3)
        a = np.clip(hed2rgb(hed), 0, 1) ** rng.uniform(0.8, 1.25)
        a = np.rot90(a, rng.integers(4))
        out[i] = a[:, ::-1] if rng.random() < 0.5 else a
    return to_input(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", type=Path, help="a typed points set (crc)")
    parser.add_argument("--out", type=Path, required=True, help="the torch checkpoint (.pt)")
    parser.add_argument("--export", type=Path, help="also write the network as this ONNX model (what ships)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--validate", type=int, default=0, help="images kept out and scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    info = json.loads((args.bench / "info.json").read_text())
    classes = list(info["classes"])
    points = pd.read_csv(args.bench / "cells.csv")
    crops, types, images = [], [], []
    for image_id, group in points.groupby("image_id"):
        path = next((args.bench / "images").glob(f"{image_id}.*"))
        rgb, s = resampled(path, float(info["mpp"]))
        crops.append(windows(rgb, group[["x", "y"]].to_numpy() * s, CROP + 2 * SHIFT))
        types += [classes.index(t) for t in group["cell_type"]]
        images += [image_id] * len(group)
    x, y, images = np.concatenate(crops), np.array(types), np.array(images)
    held = rng.choice(sorted(set(images)), args.validate, replace=False) if args.validate else []
    val = np.isin(images, held)
    train_rows = np.flatnonzero(~val)
    print(f"{len(x)} typed nuclei of {len(set(images))} images; {val.sum()} kept out", flush=True)
    net = build_type_net(len(classes))
    weight = torch.tensor(
        len(train_rows) / (len(classes) * np.bincount(y[train_rows], minlength=len(classes)))
    )
    optimiser = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-3)
    batch = 128
    steps = len(train_rows) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=args.epochs * steps)
    for epoch in range(args.epochs):
        t, net, total = time.perf_counter(), net.train(), 0.0
        order = rng.permutation(train_rows)
        for b in range(steps):
            rows = order[b * batch : (b + 1) * batch]
            loss = F.cross_entropy(
                net(augment(x[rows], rng)),
                torch.from_numpy(y[rows]),
                weight=weight.float(),
                label_smoothing=0.1,
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        line = f"epoch {epoch}: loss {total / steps:.3f}"
        if val.any():
            net.eval()
            with torch.inference_mode():
                centre = x[val][:, SHIFT : SHIFT + CROP, SHIFT : SHIFT + CROP]
                pred = torch.cat(
                    [net(to_input(centre[i : i + 512])) for i in range(0, len(centre), 512)]
                ).argmax(1)
            line += f", kept-out macro-F1 {f1_score(y[val], pred.numpy(), average='macro'):.3f}"
        print(f"{line} ({time.perf_counter() - t:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"classes": classes, "state_dict": net.eval().state_dict(), "crop_px": CROP, "mpp": WORK_MPP},
        args.out,
    )
    print(f"wrote {args.out}")
    if args.export:
        print(f"wrote {export_onnx(args.out, args.export)}")


if __name__ == "__main__":
    main()
