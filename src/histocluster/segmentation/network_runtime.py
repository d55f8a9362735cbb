"""Running the nuclei network: probabilities for an RGB image, through onnxruntime or torch.

The network (:mod:`.nuclei_net`, a small U-Net) is trained in torch and shipped twice:
``weights/nuclei_unet.pt`` (the training checkpoint) and ``weights/nuclei_unet.onnx`` (the
same function exported for inference by ``scripts/export_nuclei_net.py``, class logits out;
a test holds the two equal). The default install has no torch: the network runs through
onnxruntime, in float32, one thread per process (the segmentation pass's workers are the
parallelism). Where torch is installed (the ``train``, ``gpu`` and ``dev`` extras) it runs
there, in bfloat16 on CPUs with AMX / AVX512-BF16 (about 2× faster per tile than float32).

Which runtime a run uses (``segmentation.watershed.runtime``):

* ``auto``: torch when it can be imported, else onnxruntime; with ``weights_path`` set, the
  file decides (``.onnx`` → onnxruntime, a torch checkpoint → torch);
* ``onnxruntime`` or ``torch``: that one, or a clear error saying what to install or export.

This module imports neither torch nor onnxruntime until a network is loaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

from histocluster.errors import UserInputError
from histocluster.wsi.stain import optical_density

#: µm per pixel the network sees.
WORK_MPP = 0.5
#: Classes of the output, in order.
CLASSES = ("background", "interior", "boundary")
#: Input size multiple (three 2× poolings).
MULTIPLE = 8
#: The weights that come with the package: the torch checkpoint and its ONNX export.
SHIPPED_CHECKPOINT = Path(__file__).parent / "weights" / "nuclei_unet.pt"
SHIPPED_ONNX = SHIPPED_CHECKPOINT.with_suffix(".onnx")
#: The ONNX graph's input and output names (``scripts/export_nuclei_net.py`` writes them).
ONNX_INPUT, ONNX_OUTPUT = "density", "logits"

Runtime = Literal["onnxruntime", "torch"]


class NucleiNetwork(Protocol):
    """A loaded nuclei network: ``network(density)`` maps optical density (1, 3, h, w),
    float32, h and w multiples of :data:`MULTIPLE`, to class probabilities (1, 3, h, w)."""

    runtime: Runtime
    bfloat16: bool
    path: Path

    def __call__(self, density: np.ndarray) -> np.ndarray: ...


@lru_cache(maxsize=1)
def torch_installed() -> bool:
    """Whether torch can be imported here (without importing it)."""
    return importlib.util.find_spec("torch") is not None


@lru_cache(maxsize=1)
def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (Intel AMX or AVX512-BF16, from the
    Linux CPU flags). Elsewhere (other systems, CPUs without those units) False, as
    emulated bfloat16 is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def network_bfloat16(precision: str) -> bool:
    """Whether torch should run the network in bfloat16 for ``precision`` (``auto``,
    ``float32`` or ``bfloat16``; ``auto`` follows :func:`cpu_has_bfloat16`)."""
    if precision == "auto":
        return cpu_has_bfloat16()
    return precision == "bfloat16"


def is_onnx_file(path: Path) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix)."""
    return path.suffix.lower() == ".onnx"


def network_weights_path(path: str | Path | None) -> Path:
    """The network file for ``path`` (``None``: the shipped checkpoint).

    Raises:
        UserInputError: there is no such file.
    """
    path = Path(path).expanduser() if path else SHIPPED_CHECKPOINT
    if not path.is_file():
        raise UserInputError(
            f"{path}: nuclei network weights not found; set segmentation.watershed.weights_path "
            "to a file written by bench/train_nuclei_net.py (.pt, or the .onnx beside it), "
            "or leave it empty for the shipped weights"
        )
    return path


@dataclass(frozen=True)
class NetworkChoice:
    """Which file runs on which runtime, in which arithmetic."""

    runtime: Runtime
    path: Path
    bfloat16: bool

    @property
    def arithmetic(self) -> str:
        """``bfloat16`` or ``float32``."""
        return "bfloat16" if self.bfloat16 else "float32"


def choose_network(
    weights_path: str | Path | None = None, runtime: str = "auto", precision: str = "auto"
) -> NetworkChoice:
    """The runtime, file and arithmetic for the settings (see the module's docstring).

    Raises:
        UserInputError: the file is missing, the runtime asked for is not installed, or the
            file is of the other runtime's kind; the message says what to do.
    """
    if runtime not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"runtime must be auto, onnxruntime or torch, not {runtime!r}")
    if weights_path:
        path = network_weights_path(weights_path)
        kind: Runtime = "onnxruntime" if is_onnx_file(path) else "torch"
        if runtime not in ("auto", kind):
            raise UserInputError(
                f"{path}: a {'ONNX model' if kind == 'onnxruntime' else 'torch checkpoint'} cannot run on "
                f"segmentation.watershed.runtime {runtime}; "
                + (
                    "use the .onnx that bench/train_nuclei_net.py writes beside it, or export it: "
                    f"python scripts/export_nuclei_net.py {path}"
                    if kind == "torch"
                    else "point weights_path at the torch checkpoint (.pt), or set runtime: auto"
                )
            )
    else:
        kind = "torch" if runtime == "torch" or (runtime == "auto" and torch_installed()) else "onnxruntime"
        path = SHIPPED_CHECKPOINT if kind == "torch" else SHIPPED_ONNX
    if kind == "torch" and not torch_installed():
        raise UserInputError(
            f"{path}: running the nuclei network in torch needs torch, which is not installed; "
            "pip install 'histocluster[train]' (for the CPU build first: pip install torch "
            "--index-url https://download.pytorch.org/whl/cpu), or use the ONNX model "
            "(segmentation.watershed.runtime: onnxruntime, weights_path: the .onnx)"
        )
    if kind == "onnxruntime" and precision == "bfloat16":
        raise UserInputError(
            "segmentation.watershed.precision bfloat16 needs the torch runtime "
            "(runtime: torch, with torch installed); onnxruntime computes in float32"
        )
    return NetworkChoice(kind, path, kind == "torch" and network_bfloat16(precision))


class OnnxNucleiNetwork:
    """The network as an ONNX model in an onnxruntime session (CPU, float32)."""

    runtime: Runtime = "onnxruntime"
    bfloat16 = False

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        """Load ``path`` with ``threads`` threads for one run of the model.

        Raises:
            UserInputError: the file is not an ONNX model of the nuclei network.
        """
        from histocluster.features.onnx_models import cpu_session

        self.path = Path(path)
        try:
            self.session = cpu_session(self.path, threads)
        except Exception as error:  # noqa: BLE001 — any load failure is the file's fault
            raise UserInputError(f"{self.path}: not an ONNX model ({error})") from error
        inputs = [(i.name, len(i.shape)) for i in self.session.get_inputs()]
        outputs = [(o.name, len(o.shape)) for o in self.session.get_outputs()]
        if inputs != [(ONNX_INPUT, 4)] or outputs != [(ONNX_OUTPUT, 4)]:
            raise UserInputError(
                f"{self.path}: not a nuclei network model (inputs {inputs}, outputs {outputs}; "
                f"expected one 4-d {ONNX_INPUT!r} and one 4-d {ONNX_OUTPUT!r}, as "
                "scripts/export_nuclei_net.py writes)"
            )

    def __call__(self, density: np.ndarray) -> np.ndarray:
        logits = self.session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(density, np.float32)})[0]
        return softmax_channels(logits)


def softmax_channels(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of (n, c, h, w) logits, in place (float32): 20× faster than
    onnxruntime's own Softmax over that axis on a 512² map."""
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


def load_nuclei_network(
    weights_path: str | Path | None = None, runtime: str = "auto", precision: str = "auto"
) -> NucleiNetwork:
    """The nuclei network for the settings (:func:`choose_network`), ready to run.

    Raises:
        UserInputError: as :func:`choose_network`, or the file is not a network of its kind.
    """
    choice = choose_network(weights_path, runtime, precision)
    if choice.runtime == "onnxruntime":
        return OnnxNucleiNetwork(choice.path)
    from histocluster.segmentation.nuclei_net import TorchNucleiNetwork

    return TorchNucleiNetwork(choice.path, bfloat16=choice.bfloat16)


def work_size(shape: tuple[int, int], mpp: float) -> tuple[int, int]:
    """The (h, w) of an image of ``shape`` at ``mpp`` µm/px resampled to :data:`WORK_MPP`."""
    h, w = shape
    return max(1, round(h * mpp / WORK_MPP)), max(1, round(w * mpp / WORK_MPP))


def network_input(rgb: np.ndarray, mpp: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The network's input for an RGB uint8 image at ``mpp`` µm/px: optical density
    (1, 3, h', w') float32 at :data:`WORK_MPP` (area-averaged when shrinking, bilinear when
    enlarging), reflect-padded at the bottom and right to a multiple of :data:`MULTIPLE`
    (edge-padded when the image is too small to reflect); and the unpadded (h', w')."""
    size = work_size(rgb.shape[:2], mpp)
    pad_h, pad_w = -size[0] % MULTIPLE, -size[1] % MULTIPLE
    mode = "reflect" if min(size) > max(pad_h, pad_w) else "edge"
    if size == rgb.shape[:2]:
        # Pad the 8-bit image: cheaper than padding the density.
        if pad_h or pad_w:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
        density = optical_density(rgb)
    else:
        shrink = size[0] < rgb.shape[0]
        density = cv2.resize(
            np.ascontiguousarray(optical_density(rgb), np.float32),
            (size[1], size[0]),
            interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
        )
        if pad_h or pad_w:
            density = np.pad(density, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    return np.ascontiguousarray(np.asarray(density, np.float32).transpose(2, 0, 1)[None]), size


def predict_probabilities(network: NucleiNetwork, rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Class probabilities (3, h', w') at :data:`WORK_MPP` of an RGB image at ``mpp`` µm/px,
    float32 (:func:`network_input`; the output is cropped back to the resampled size,
    ``round(h * mpp / WORK_MPP)`` × ``round(w * mpp / WORK_MPP)``)."""
    density, (h, w) = network_input(rgb, mpp)
    return np.ascontiguousarray(network(density)[0, :, :h, :w], dtype=np.float32)


def resize_probabilities(probabilities: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Probability maps (c, h, w) resampled bilinearly to ``shape`` (h, w)."""
    if probabilities.shape[1:] == tuple(shape):
        return probabilities
    return np.stack(
        [cv2.resize(p, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for p in probabilities]
    )
