"""Resume per slide: each slide's segmentation is kept as soon as it is done, keyed by its
file, tiles, parameters and code, so a killed run redoes only the unfinished slides and a
slide added to a cohort is the only one segmented (real Kedro runs, a real SIGKILL)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from histocluster.atomic_files import is_partial
from histocluster.segmentation.slide_store import SlideStore, file_identity, slide_key

from .conftest import kedro_run, load, messages, venv_env

pytestmark = pytest.mark.slow

FAST = {"tiling.max_tiles": 4, "segmentation.watershed.foreground": "threshold"}
PARAMS = ",".join(f"{k}={v}" for k, v in FAST.items())


def _stored(root) -> list:
    folder = root / "data" / "03_primary" / "slide_store"
    return sorted(p for p in folder.glob("*/*.pkl") if not is_partial(p)) if folder.is_dir() else []


def _reused(records: list[logging.LogRecord]) -> set[str]:
    return {
        r.getMessage().split(":")[0].removeprefix("Slide ")
        for r in records
        if "segmentation reused from" in r.getMessage()
    }


def _sorted_cells(root) -> pd.DataFrame:
    (cells,) = load(root, "cells")
    return cells.sort_values("cell_id").reset_index(drop=True)


def test_a_killed_run_resumes_with_the_unfinished_slide_only(project, cmu_slide, tcga_slide):
    root = project([cmu_slide, tcga_slide])
    kedro_run(root, "tiling", **FAST)
    run = subprocess.Popen(
        ["kedro", "run", "--pipelines=segmentation", "--params", PARAMS],
        cwd=root,
        env=venv_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not _stored(root):
            assert run.poll() is None and time.monotonic() < deadline, "the run ended before storing a slide"
            time.sleep(0.02)
        os.kill(run.pid, signal.SIGKILL)
    finally:
        run.kill()
        run.wait()
    (done,) = _stored(root)  # killed after the first slide, before the second
    assert not (root / "data" / "03_primary" / "cells.parquet").exists()  # the killed run saved no table

    records: list[logging.LogRecord] = []
    kedro_run(root, "segmentation", log=records, **FAST)
    assert _reused(records) == {done.parent.name}
    assert len(_stored(root)) == 2
    resumed = _sorted_cells(root)
    assert set(resumed["slide_id"]) == {"cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"}

    # The same cells as a run that never stopped and kept nothing.
    kedro_run(root, "segmentation", **FAST, **{"segmentation.slide_store": None})
    pd.testing.assert_frame_equal(resumed, _sorted_cells(root))


def test_adding_a_slide_segments_only_that_slide_and_a_parameter_change_all(project, cmu_slide, tcga_slide):
    root = project([cmu_slide])
    kedro_run(root, "tiling", **FAST)
    kedro_run(root, "segmentation", **FAST)
    shutil.copy(tcga_slide, root / "data" / "01_raw" / "slides" / tcga_slide.name)

    records: list[logging.LogRecord] = []
    kedro_run(root, "tiling", **FAST)
    kedro_run(root, "segmentation", log=records, **FAST)
    assert _reused(records) == {"cmu-1-small-region"}, messages(records)
    assert set(_sorted_cells(root)["slide_id"]) == {"cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"}

    records.clear()  # where it runs does not matter
    kedro_run(root, "segmentation", log=records, **FAST, **{"segmentation.parallel.n_workers": 1})
    assert _reused(records) == {"cmu-1-small-region", "tcga-cr-7395-01a-01-ts1"}

    records.clear()
    kedro_run(root, "segmentation", log=records, **FAST, **{"segmentation.watershed.min_distance_um": 3.0})
    assert _reused(records) == set()  # a segmentation parameter changed: every slide again


def test_the_key_follows_the_file_the_tiles_the_settings_and_the_code(tmp_path, cmu_slide):
    copy = tmp_path / "a.svs"
    shutil.copy(cmu_slide, copy)
    slide = {"slide_id": "a", "path": str(copy), "mpp_x": 0.5}
    tiles = pd.DataFrame({"tile_id": ["t1", "t2"], "x": [0, 512], "w": [512, 512]})
    key = slide_key(slide, tiles, "settings", "code")
    moved = tmp_path / "moved.svs"
    shutil.copy(copy, moved)
    assert slide_key({**slide, "path": str(moved)}, tiles, "settings", "code") == key  # a copy: same
    assert slide_key({**slide, "mpp_x": 0.25}, tiles, "settings", "code") != key
    assert slide_key(slide, tiles.iloc[:1], "settings", "code") != key
    assert slide_key(slide, tiles, "other settings", "code") != key
    assert slide_key(slide, tiles, "settings", "other code") != key
    with copy.open("r+b") as handle:  # another file under the same name
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    assert file_identity(copy) != file_identity(moved)
    assert slide_key(slide, tiles, "settings", "code") != key

    store = SlideStore(tmp_path / "store")
    for k in range(5):
        store.save("a", f"k{k}", {"n": k})
        time.sleep(0.01)
    assert store.load("a", "k4") == {"n": 4} and store.load("a", "k0") is None  # the newest 3 kept
    assert len(list((tmp_path / "store" / "a").glob("*.pkl"))) == 3
    store.path("a", "bad").write_bytes(b"not a pickle")
    assert store.load("a", "bad") is None  # damaged: segmented again, not a crash
