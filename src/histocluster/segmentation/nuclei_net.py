"""A small U-Net that maps an H&E image to nucleus probability maps, for the CPU.

Three classes per pixel: background, nucleus interior, nucleus boundary (the outermost
pixel ring of each nucleus, which also runs between touching nuclei). The network works
at :data:`WORK_MPP` µm/px whatever the input resolution, on optical density, so it sees
nuclei at one physical size. About 256k weights (1 MB).

The shipped weights (``weights/nuclei_unet.pt``) were trained by
``bench/train_nuclei_net.py`` on five instance sets: the 13 MoNuSeg development images, the
CoNSeP development tiles, CPM-15 at 20× and 40× and the glioma (lgg) tiles (research-use
data, so the weights are for research use too), with small-nucleus weighting and set odds
3:2:1:1:1. The quality in docs/segmentation.md is held out: ``bench/crossval_nuclei_net.py`` scores
each image of every set with a network trained without it. The checkpoint records its
training command and images (``trained_on``). For inference the trained network is
rearranged (:class:`InferenceUNet`) into the same function computed faster on the CPU;
:func:`export_onnx` writes that function as ONNX (``weights/nuclei_unet.onnx``), which the
default install runs through onnxruntime (:mod:`.network_runtime`) without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from histocluster.errors import UserInputError
from histocluster.segmentation.network_runtime import CLASSES, WORK_MPP, network_weights_path
from histocluster.wsi.stain import optical_density

__all__ = ["CHANNELS", "CLASSES", "WORK_MPP", "NucleiUNet", "InferenceUNet", "TorchNucleiNetwork"]

#: Channel widths of the encoder levels (full, 1/2, 1/4, 1/8 resolution).
CHANNELS = (16, 32, 64, 64)


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


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` for even-sized channels-last maps, as two element-wise
    maxima over contiguous halves (3× faster on one CPU core than PyTorch's pooling
    kernel, which also computes the argmax)."""
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"max_pool_2x2 needs even height and width, got {h}×{w}")
    rows = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)
    pairs = torch.maximum(rows[:, :, 0], rows[:, :, 1]).view(n, h // 2, w // 2, 2, c)
    return torch.maximum(pairs[..., 0, :], pairs[..., 1, :]).permute(0, 3, 1, 2)


#: For one axis of a 3-tap kernel applied after 2× nearest upsampling: which taps fall on
#: each of the 4 taps of the equivalent stride-2 transposed convolution (rows) — the
#: kernel indices are ``y + 1 - 2i`` for output pixel ``y`` and input pixel ``i``.
_UPSAMPLED_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def _skip_convolution(conv: nn.Conv2d, upsampled_channels: int) -> nn.Conv2d:
    """The part of a trained decoder convolution (``conv`` over ``cat[upsampled, skip]``)
    that sees the skip channels, as a 3×3 convolution of ``skip`` with ``conv``'s bias."""
    weight, bias = conv.weight.detach(), conv.bias.detach()
    skip = nn.Conv2d(weight.shape[1] - upsampled_channels, weight.shape[0], 3, padding=1)
    skip.weight.data = weight[:, upsampled_channels:].clone()
    skip.bias.data = bias.clone()
    return skip


class _UpsampleSkipBlock(nn.Module):
    """``relu(conv3x3(cat[upsample2×(low), skip]))`` of a trained decoder block, computed
    without the upsampled map or the concatenation: the part of the kernel that sees the
    upsampled channels becomes a stride-2 transposed convolution of ``low`` (4×4 taps, each
    the sum of the 3×3 taps that fall on one low-resolution pixel), the rest a 3×3
    convolution of ``skip``; the two are added. Same outputs up to rounding, about a third
    fewer multiply-adds for the block and no full-resolution copies."""

    def __init__(self, conv: nn.Conv2d, upsampled_channels: int) -> None:
        super().__init__()
        weight, outputs = conv.weight.detach(), conv.weight.shape[0]
        self.skip = _skip_convolution(conv, upsampled_channels)
        self.up = nn.ConvTranspose2d(upsampled_channels, outputs, 4, stride=2, padding=1, bias=False)
        taps = _UPSAMPLED_TAPS.to(weight.dtype)
        self.up.weight.data = torch.einsum(
            "pd,oide,qe->iopq", taps, weight[:, :upsampled_channels], taps
        ).contiguous()

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        out = self.skip(skip)
        out += self.up(low)
        return F.relu_(out)


#: For the two output phases (even, odd) of one axis of a 3-tap kernel applied after 2×
#: nearest upsampling: which taps (columns) fall on each low-resolution offset -1, 0, +1 (rows).
_PHASE_TAPS = torch.tensor(
    [[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]
)


class _PhaseUpsampleSkipBlock(nn.Module):
    """:class:`_UpsampleSkipBlock` in the form onnxruntime runs fastest: the part of the
    kernel that sees the upsampled channels becomes one 3×3 convolution of ``low`` whose
    output channels are the four output phases (row parity × column parity), put in place by
    ``pixel_shuffle`` (ONNX DepthToSpace). onnxruntime keeps its convolutions in a blocked
    memory layout, which its ConvTranspose leaves (~25% slower on the whole network)."""

    def __init__(self, conv: nn.Conv2d, upsampled_channels: int) -> None:
        super().__init__()
        weight, outputs = conv.weight.detach(), conv.weight.shape[0]
        self.skip = _skip_convolution(conv, upsampled_channels)
        self.up = nn.Conv2d(upsampled_channels, 4 * outputs, 3, padding=1, bias=False)
        taps = _PHASE_TAPS.to(weight.dtype)
        phases = torch.einsum("apd,oide,bqe->oabipq", taps, weight[:, :upsampled_channels], taps)
        self.up.weight.data = phases.reshape(4 * outputs, upsampled_channels, 3, 3).contiguous()

    def forward(self, low: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.relu(self.skip(skip) + F.pixel_shuffle(self.up(low), 2))


class _RearrangedUNet(nn.Module):
    """A trained :class:`NucleiUNet` computed another way (the same function, outputs equal
    up to float rounding): batch norm folded into the convolutions, each decoder block's
    upsample + concatenate + convolve as ``decoder_block``, pooling by ``pool``. Inputs must be
    multiples of 8 in height and width."""

    decoder_block: type[nn.Module]

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __init__(self, network: NucleiUNet) -> None:
        super().__init__()
        if network.training:
            raise ValueError("build the inference network from a network in eval mode")
        network = fold_batch_norm(network)
        self.channels = network.channels
        self.enc0, self.enc1, self.enc2, self.bottom = (
            network.enc0,
            network.enc1,
            network.enc2,
            network.bottom,
        )
        _, c1, c2, c3 = network.channels
        self.dec2 = self.decoder_block(network.dec2[0], c3)
        self.dec1 = self.decoder_block(network.dec1[0], c2)
        self.dec0 = self.decoder_block(network.dec0[0], c1)
        self.head = network.head
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.enc0(x)
        x1 = self.enc1(self.pool(x0))
        x2 = self.enc2(self.pool(x1))
        bottom = self.bottom(self.pool(x2))
        d = self.dec2(bottom, x2)
        d = self.dec1(d, x1)
        return self.head(self.dec0(d, x0))


class InferenceUNet(_RearrangedUNet):
    """The network rearranged for fast inference in torch on the CPU: the decoder as
    :class:`_UpsampleSkipBlock`, pooling by :func:`max_pool_2x2`; class logits out."""

    decoder_block = _UpsampleSkipBlock
    pool = staticmethod(max_pool_2x2)


class ExportUNet(_RearrangedUNet):
    """The network rearranged for onnxruntime (:func:`export_onnx`): the decoder as
    :class:`_PhaseUpsampleSkipBlock`, standard max pooling; class logits out (the softmax is
    cheaper in NumPy than in onnxruntime)."""

    decoder_block = _PhaseUpsampleSkipBlock

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2)


def read_network(path: str | Path | None = None) -> NucleiUNet:
    """The trained network of a checkpoint (default: the shipped file), in eval mode.

    Raises:
        UserInputError: the file is missing or is not a checkpoint of this network.
    """
    path = network_weights_path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        network = NucleiUNet(tuple(checkpoint["channels"]))
        network.load_state_dict(checkpoint["state_dict"])
    except Exception as error:  # noqa: BLE001 — any unpickling/shape problem is the file's fault
        raise UserInputError(f"{path}: not a nuclei network checkpoint ({error})") from error
    return network.eval()


def load_network(path: str | Path | None = None) -> InferenceUNet:
    """The network with weights from ``path`` (default: the shipped file), ready for
    inference (:class:`InferenceUNet`, channels-last).

    Raises:
        UserInputError: the file is missing or is not a checkpoint of this network.
    """
    return InferenceUNet(read_network(path)).to(memory_format=torch.channels_last)


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
    """Optical density of an RGB uint8 image as a (1, 3, h, w) float tensor, channels-last
    in memory (a view of the (h, w, 3) density, no copy)."""
    od = np.ascontiguousarray(optical_density(rgb))
    return torch.from_numpy(od).permute(2, 0, 1)[None]


class TorchNucleiNetwork:
    """The network from a torch checkpoint as a :class:`~.network_runtime.NucleiNetwork`:
    :class:`InferenceUNet`, channels-last, in bfloat16 (CPU autocast) when asked."""

    runtime = "torch"

    def __init__(self, path: str | Path | None = None, bfloat16: bool = False) -> None:
        self.path = network_weights_path(path)
        self.bfloat16 = bfloat16
        self.network = load_network(self.path)

    def __call__(self, density: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(density, np.float32))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16):
            logits = self.network(x.contiguous(memory_format=torch.channels_last))
        return torch.softmax(logits.float(), dim=1).numpy()


def export_onnx(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the network of ``checkpoint`` as an ONNX model at ``out``: the inference
    rearrangement for onnxruntime (:class:`ExportUNet`), input ``density`` (n, 3, h, w)
    and output ``logits`` (n, 3, h, w), any batch and size (multiples of 8). The
    model's metadata names the checkpoint's SHA-256, its ``trained_on`` and ``command``.

    Raises:
        UserInputError: ``checkpoint`` is not a checkpoint of this network.
    """
    import hashlib
    import json

    from histocluster.features.onnx_models import write_onnx
    from histocluster.segmentation.network_runtime import ONNX_INPUT, ONNX_OUTPUT

    checkpoint = network_weights_path(checkpoint)
    network = ExportUNet(read_network(checkpoint))
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    metadata = {
        "source_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "channels": json.dumps(list(saved["channels"])),
        "trained_on": json.dumps(saved.get("trained_on", [])),
        "command": str(saved.get("command", "")),
        "work_mpp": str(saved.get("work_mpp", WORK_MPP)),
    }
    return write_onnx(
        network,
        torch.zeros(1, 3, 64, 64),
        out,
        (ONNX_INPUT, ONNX_OUTPUT),
        {0: "batch", 2: "height", 3: "width"},
        metadata,
        "histocluster nuclei U-Net (scripts/export_nuclei_net.py)",
    )
