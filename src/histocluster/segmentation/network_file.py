"""Checks on a nuclei network file that do not import torch.

A run whose segmentation pass goes to worker processes never needs torch in its own
process, and importing it costs ~0.3 GB of private memory there (the CUDA build from PyPI;
~0.67 GB resident with its libraries). The check before the first node therefore reads the
checkpoint's zip archive and pickle itself: the archive's checksums, the pickle (with a
restricted unpickler that builds no objects but plain containers and tensor shapes), the
``channels`` and ``state_dict`` entries, and each tensor's stored bytes. An ONNX model is
checked by loading it in onnxruntime (:func:`check_network`). The network itself is loaded
where it runs (:func:`histocluster.segmentation.network_runtime.load_nuclei_network`).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

from histocluster.errors import UserInputError
from histocluster.segmentation.network_runtime import (
    SHIPPED_CHECKPOINT,
    NetworkChoice,
    choose_network,
    network_weights_path,
)

#: The shipped checkpoint (``bench/train_nuclei_net.py`` writes this format).
DEFAULT_WEIGHTS = SHIPPED_CHECKPOINT

#: Bytes per element of the storage types a checkpoint may hold.
_ITEM_SIZE = {
    "FloatStorage": 4,
    "DoubleStorage": 8,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}


class _Tensor(tuple):
    """A tensor's shape, standing in for the tensor."""


class _ShapeUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint into dicts, lists and :class:`_Tensor` shapes; any
    other class in the pickle is refused."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: list[tuple[str, str, int]] = []  # (type name, key, elements)

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")):
            return lambda storage, offset, size, *rest: _Tensor(size)
        if module == "torch" and name in _ITEM_SIZE:
            return name
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, elements = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        self.storages.append((storage_type, str(key), int(elements)))
        return key


def check_network_file(path: str | Path | None) -> Path:
    """The checkpoint file for ``path``, checked without torch: a readable archive with
    intact checksums, ``channels`` (positive integers) and a ``state_dict`` of tensors, and
    every tensor's bytes present.

    Raises:
        UserInputError: the file is missing or is not a checkpoint of the nuclei network.
    """
    path = network_weights_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            if broken is not None:
                raise ValueError(f"{broken} fails its checksum")
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise ValueError("no data.pkl in the archive")
            prefix = pickles[0][: -len("data.pkl")]
            unpickler = _ShapeUnpickler(archive.read(pickles[0]))
            checkpoint = unpickler.load()
            sizes = {info.filename: info.file_size for info in archive.infolist()}
        if not isinstance(checkpoint, dict) or not {"channels", "state_dict"} <= checkpoint.keys():
            raise ValueError("it holds no 'channels' and 'state_dict'")
        channels = checkpoint["channels"]
        if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
            raise ValueError(f"'channels' is {channels!r}, not a list of positive integers")
        state = checkpoint["state_dict"]
        if (
            not isinstance(state, dict)
            or not state
            or not all(isinstance(v, _Tensor) for v in state.values())
        ):
            raise ValueError("'state_dict' is not a dictionary of tensors")
        for storage_type, key, elements in unpickler.storages:
            want = elements * _ITEM_SIZE[storage_type]
            have = sizes.get(f"{prefix}data/{key}")
            if have != want:
                raise ValueError(f"tensor data {key} holds {have} bytes, not {want}")
    except Exception as error:  # noqa: BLE001 — any archive/unpickling problem is the file's fault
        raise UserInputError(f"{path}: not a nuclei network checkpoint ({error})") from error
    return path


def check_network(
    weights_path: str | Path | None = None, runtime: str = "auto", precision: str = "auto"
) -> NetworkChoice:
    """The network a run will use (:func:`~.network_runtime.choose_network`), its file
    checked without torch: a checkpoint by :func:`check_network_file`, an ONNX model by
    loading it in onnxruntime (inputs and outputs of the nuclei network).

    Raises:
        UserInputError: as :func:`~.network_runtime.choose_network`, or the file is broken.
    """
    choice = choose_network(weights_path, runtime, precision)
    if choice.runtime == "torch":
        check_network_file(choice.path)
    else:
        from histocluster.segmentation.network_runtime import OnnxNucleiNetwork

        OnnxNucleiNetwork(choice.path)
    return choice
