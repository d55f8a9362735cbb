"""Every bench script still imports what it uses and answers --help (a bench that breaks
silently when the code moves is a benchmark nobody can rerun)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_bench_script_starts(script):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


def test_the_big_slide_is_real_tissue_that_openslide_reads_at_its_scale(tmp_path, cmu_slide):
    """bench/make_big_slide.py: a pyramidal TIFF whose µm/px OpenSlide reports, whose levels
    match the level-0 pixels, and whose tissue blocks hold the sample slide's colours."""
    import numpy as np
    import openslide

    out = tmp_path / "big.tif"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "make_big_slide.py"), "--out", str(out), "--size", "6144",
         "--mpp", "0.5", "--source", str(cmu_slide)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    with openslide.OpenSlide(str(out)) as slide:
        assert float(slide.properties["openslide.mpp-x"]) == 0.5
        assert slide.level_dimensions == ((6144, 6144), (1536, 1536))
        whole = np.asarray(slide.read_region((0, 0), 0, (6144, 6144)).convert("RGB"), dtype=np.float32)
        small = np.asarray(slide.read_region((0, 0), 1, (1536, 1536)).convert("RGB"), dtype=np.float32)
    shrunk = whole.reshape(1536, 4, 1536, 4, 3).mean(axis=(1, 3))
    assert np.abs(shrunk - small).mean() < 4  # the same picture (JPEG apart)
    blocks = whole.reshape(3, 2048, 3, 2048, 3).mean(axis=(1, 3))  # mean colour per block
    tissue = blocks.mean(axis=-1) < 215
    assert tissue.sum() >= 4 and (~tissue).sum() >= 1  # tissue inside, glass in a corner
    # H&E pink/purple: green below red (by 20 and more in the sample slide's tissue; each block's
    # colour is jittered by up to ±6 % per channel, which can take ~12 of that away).
    assert (blocks[tissue][:, 1] < blocks[tissue][:, 0] - 5).all()


def test_the_gpu_check_says_there_is_no_gpu_and_exits_0_without_one(tmp_path):
    """bench/gpu_check.sh on a machine without nvidia-smi (or where it finds no GPU)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    for path in (f"{fake}:/usr/bin:/bin", "/usr/bin:/bin"):  # a broken driver, and none at all
        done = subprocess.run(
            ["bash", str(ROOT / "bench" / "gpu_check.sh")],
            capture_output=True, text=True, timeout=60, env={"PATH": path},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "no NVIDIA GPU here" in done.stdout
        assert not (ROOT / ".venv-gpu").exists()  # nothing installed


def test_typed_detection_scores_follow_hovernets_formula_by_hand():
    """Three true nuclei (two epithelial, one spindle), four detections: three paired (one
    epithelial typed spindle), one unpaired typed epithelial; one spindle missed."""
    import numpy as np
    import pandas as pd

    sys.path.insert(0, str(ROOT / "bench"))
    from bench_typed_detection import pair, typed_detection_scores

    true_xy = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0], [200.0, 200.0]])
    pred_xy = np.array([[52.0, 49.0], [11.0, 10.0], [95.0, 92.0], [150.0, 10.0]])
    rows, cols = pair(true_xy, pred_xy, radius=12)
    assert sorted(zip(rows, cols, strict=True)) == [(0, 1), (1, 0), (2, 2)]  # (200, 200) and (150, 10) alone
    cells = pd.DataFrame({"cell_type": ["epithelial", "epithelial", "spindle", None]})
    truth = pd.DataFrame(
        {"cell_type": ["epithelial", "epithelial", "spindle", "spindle"], "paired": [1, 0, 2, -1]}
    )
    predicted = np.array(["epithelial", "spindle", "spindle", "epithelial"], dtype=object)
    scores = typed_detection_scores(cells, truth, predicted)
    assert scores["F_d"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # epithelial: TP 1, FN 1 (typed spindle), FP_d 1 (the unpaired detection) → 2 / (2 + 2 + 1)
    assert scores["F_c epithelial"] == pytest.approx(2 / 5)
    # spindle: TP 1, FP 1 (the epithelial typed spindle), FN_d 1 (missed) → 2 / (2 + 2 + 1)
    assert scores["F_c spindle"] == pytest.approx(2 / 5)
