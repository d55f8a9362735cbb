"""ONNX models the project ships, written from torch and run in onnxruntime: one exporter
and one way to open a CPU session, shared by the nuclei U-Net
(:mod:`histocluster.segmentation.nuclei_net`) and the type network
(:mod:`histocluster.features.type_net`). No torch or onnxruntime import at module load.
"""

from __future__ import annotations

from pathlib import Path


def write_onnx(
    module,
    example,
    out: str | Path,
    names: tuple[str, str],
    dynamic_axes: dict[int, str],
    metadata: dict[str, str],
    doc: str,
) -> Path:
    """Export the torch ``module`` (in eval mode; ``example`` an input tensor) as one
    self-contained ONNX file at ``out`` (TorchScript exporter, opset 17): input and output
    named ``names``, ``dynamic_axes`` on both, ``metadata`` as the model's metadata
    properties, checked with ``onnx.checker``. Written beside ``out`` and renamed: never a
    half-written model under the final name."""
    import tempfile
    import warnings

    import onnx
    import torch

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source, target = names
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as folder:
        staged = Path(folder) / out.name
        # The TorchScript exporter: one self-contained file (the newer one writes the
        # weights beside it).
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated since torch 2.9 and still ships (2.14).
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
            torch.onnx.export(
                module,
                (example,),
                str(staged),
                input_names=[source],
                output_names=[target],
                dynamic_axes={source: dynamic_axes, target: dynamic_axes},
                opset_version=17,
                dynamo=False,
            )
        model = onnx.load(str(staged))
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        model.doc_string = doc
        onnx.checker.check_model(model)
        onnx.save(model, str(staged))
        staged.replace(out)
    return out


def cpu_session(path: str | Path, threads: int):
    """An onnxruntime session of ``path`` on the CPU with ``threads`` threads for one run
    of the model (0: onnxruntime's default), errors only in its log (its warnings are about
    graph rewrites). Raises what onnxruntime raises for a file it cannot load."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
