"""CPU or GPU (cuML) for reduction and clustering, chosen by the ``device`` parameter.

* ``cpu``: umap-learn, scikit-learn, hdbscan, igraph/leidenalg.
* ``gpu``: cuML; if cuML cannot be imported or sees no GPU, the run stops with a clear
  message (never a silent fall back to a CPU run that takes a hundred times longer).
* ``auto``: cuML when it imports and a GPU is there, the CPU libraries otherwise.

Whichever is chosen is logged.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Literal

from histocluster.errors import UserInputError

logger = logging.getLogger(__name__)

Device = Literal["cpu", "gpu", "auto"]


class BackendError(UserInputError):
    """The GPU backend was asked for and is not usable."""


@cache
def cuml_problem() -> str | None:
    """Why cuML cannot run here, or None when it can."""
    try:
        import cuml  # noqa: F401
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return f"cuML does not import ({type(exc).__name__}: {exc})"
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA GPU is visible"
    except Exception as exc:
        return f"no CUDA GPU is usable ({type(exc).__name__}: {exc})"
    return None


def use_gpu(device: Device, what: str) -> bool:
    """Whether ``what`` (e.g. "UMAP") runs on cuML; logs the choice."""
    if device == "cpu":
        logger.info("%s: CPU (device: cpu)", what)
        return False
    problem = cuml_problem()
    if problem is None:
        logger.info("%s: GPU, cuML (device: %s)", what, device)
        return True
    if device == "gpu":
        raise BackendError(
            f"clustering.device is 'gpu' but {problem}. Install the GPU extra "
            "(pip install 'histocluster[gpu]') on a CUDA machine, or set clustering.device: cpu or auto."
        )
    logger.info("%s: CPU (device: auto; %s)", what, problem)
    return False


def to_numpy(array):
    """A host numpy array from a cuML/cuPy result (or a numpy array, unchanged)."""
    if hasattr(array, "to_numpy"):
        array = array.to_numpy()
    if hasattr(array, "get"):
        array = array.get()
    return array
