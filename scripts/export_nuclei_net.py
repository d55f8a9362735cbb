"""Export a nuclei network checkpoint (.pt) to ONNX, for the default install (no torch).

    python scripts/export_nuclei_net.py src/histocluster/segmentation/weights/nuclei_unet.pt

writes ``nuclei_unet.onnx`` beside it (or ``--out``). Needs torch and onnx (the ``train``
extra). ``bench/train_nuclei_net.py`` calls the same export after training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from histocluster.errors import UserInputError
from histocluster.segmentation.nuclei_net import export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a checkpoint written by bench/train_nuclei_net.py")
    parser.add_argument("--out", type=Path, help="the ONNX file (default: beside the checkpoint, .onnx)")
    args = parser.parse_args()
    try:
        out = export_onnx(args.checkpoint, args.out or args.checkpoint.with_suffix(".onnx"))
    except UserInputError as error:
        raise SystemExit(f"Error: {error}") from None
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
