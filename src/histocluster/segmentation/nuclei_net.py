"""A small U-Net that maps an H&E image to nucleus probability maps, for the CPU.

Three classes per pixel: background, nucleus interior, nucleus boundary (the outermost
pixel ring of each nucleus, which also runs between touching nuclei). The network works
at :data:`WORK_MPP` µm/px whatever the input resolution, on optical density, so it sees
nuclei at one physical size. About 140k weights.

The shipped weights (``weights/nuclei_unet.pt``) were trained by
``bench/train_nuclei_net.py`` on the CoNSeP development tiles and the 13 MoNuSeg
development images (research-use data, so the weights are for research use too). The
MoNuSeg quality in the README is held out: ``bench/crossval_nuclei_net.py`` scores each
image with a network trained without it. The checkpoint records its training command and
images (``trained_on``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from histocluster.errors import UserInputError
from histocluster.wsi.stain import optical_density

#: µm per pixel the network sees.
WORK_MPP = 0.5
#: Channel widths of the encoder levels (full, 1/2, 1/4, 1/8 resolution).
CHANNELS = (12, 24, 48, 48)
#: Classes of the output, in order.
CLASSES = ("background", "interior", "boundary")
#: The weights that come with the package.
DEFAULT_WEIGHTS = Path(__file__).with_name("weights") / "nuclei_unet.pt"
#: Input size multiple (three 2× poolings).
_MULTIPLE = 8


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)
    )


class NucleiUNet(nn.Module):
    """Three-level U-Net; input optical density (n, 3, h, w), output class logits (n, 3, h, w)."""

    def __init__(self, channels: tuple[int, int, int, int] = CHANNELS) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.channels = tuple(channels)  # saved with the weights, to rebuild the network
        self.enc0 = nn.Sequential(_block(3, c0), _block(c0, c0))
        self.enc1 = nn.Sequential(_block(c0, c1), _block(c1, c1))
        self.enc2 = nn.Sequential(_block(c1, c2), _block(c2, c2))
        self.bottom = nn.Sequential(_block(c2, c3), _block(c3, c3))
        self.dec2 = _block(c3 + c2, c2)
        self.dec1 = _block(c2 + c1, c1)
        self.dec0 = _block(c1 + c0, c0)
        self.head = nn.Conv2d(c0, len(CLASSES), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.enc0(x)
        x1 = self.enc1(F.max_pool2d(x0, 2))
        x2 = self.enc2(F.max_pool2d(x1, 2))
        bottom = self.bottom(F.max_pool2d(x2, 2))
        d = self.dec2(torch.cat([F.interpolate(bottom, size=x2.shape[-2:]), x2], 1))
        d = self.dec1(torch.cat([F.interpolate(d, size=x1.shape[-2:]), x1], 1))
        d = self.dec0(torch.cat([F.interpolate(d, size=x0.shape[-2:]), x0], 1))
        return self.head(d)


def load_network(path: str | Path | None = None) -> NucleiUNet:
    """The network with weights from ``path`` (default: the shipped file), in eval mode.

    Raises:
        UserInputError: the file is missing or is not a checkpoint of this network.
    """
    path = Path(path) if path else DEFAULT_WEIGHTS
    if not path.is_file():
        raise UserInputError(
            f"{path}: nuclei network weights not found; set segmentation.watershed.weights_path "
            "to a file written by bench/train_nuclei_net.py, or leave it empty for the shipped weights"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        network = NucleiUNet(tuple(checkpoint["channels"]))
        network.load_state_dict(checkpoint["state_dict"])
    except Exception as error:  # noqa: BLE001 — any unpickling/shape problem is the file's fault
        raise UserInputError(f"{path}: not a nuclei network checkpoint ({error})") from error
    return fold_batch_norm(network.eval()).to(memory_format=torch.channels_last)


def fold_batch_norm(network: NucleiUNet) -> NucleiUNet:
    """``network`` (in eval mode) with each batch norm folded into the convolution before
    it: the same outputs, one pass over the feature maps fewer per block."""
    if network.training:
        raise ValueError("batch norm can be folded only in eval mode")
    for module in network.modules():
        if isinstance(module, nn.Sequential) and len(module) == 3 and isinstance(module[1], nn.BatchNorm2d):
            module[0] = fuse_conv_bn_eval(module[0], module[1])
            module[1] = nn.Identity()
    return network


def image_to_input(rgb: np.ndarray) -> torch.Tensor:
    """Optical density of an RGB uint8 image as a (1, 3, h, w) float tensor."""
    od = optical_density(rgb)
    return torch.from_numpy(np.ascontiguousarray(od.transpose(2, 0, 1)))[None]


@lru_cache(maxsize=1)
def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (Intel AMX or AVX512-BF16, from the
    Linux CPU flags): there the network runs about 3× faster in bfloat16. Elsewhere
    (other systems, CPUs without those units) False, as emulated bfloat16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def network_bfloat16(precision: str) -> bool:
    """Whether to run the network in bfloat16 for ``precision`` (``auto``, ``float32`` or
    ``bfloat16``; ``auto`` follows :func:`cpu_has_bfloat16`)."""
    if precision == "auto":
        return cpu_has_bfloat16()
    return precision == "bfloat16"


def predict_probabilities(
    network: NucleiUNet, rgb: np.ndarray, mpp: float, bfloat16: bool = False
) -> np.ndarray:
    """Class probabilities (3, h', w') at :data:`WORK_MPP` of an RGB image at ``mpp`` µm/px,
    float32; with ``bfloat16`` the convolutions run in bfloat16 (CPU autocast).

    The image is resampled (area-averaged when shrinking) to the work resolution and
    reflect-padded to a multiple of 8; the output is cropped back to the resampled size,
    ``round(h * mpp / WORK_MPP)`` × ``round(w * mpp / WORK_MPP)``.
    """
    x = image_to_input(rgb)
    h, w = x.shape[-2:]
    size = (max(1, round(h * mpp / WORK_MPP)), max(1, round(w * mpp / WORK_MPP)))
    with torch.inference_mode():
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="area" if size[0] < h else "bilinear")
        pad_h, pad_w = -size[0] % _MULTIPLE, -size[1] % _MULTIPLE
        if pad_h or pad_w:
            mode = "reflect" if min(size) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            logits = network(x.contiguous(memory_format=torch.channels_last))
        probabilities = torch.softmax(logits[0, :, : size[0], : size[1]].float(), dim=0)
    return probabilities.numpy()
