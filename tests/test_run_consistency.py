"""One consistent run: saves that are all or nothing (checked by killing a real save),
run records and the refusal of inputs from different runs (a real run killed between two
saves), cell tables that must cover each other, and one run at a time per project."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import Version
from PIL import Image

from histocluster.atomic_files import is_partial, partial_path
from histocluster.run_lineage import (
    MixedRunsError,
    conflicts,
    describe_conflicts,
    read_lineage,
    record_path,
    require_same_cells,
    write_record,
)

from .conftest import kedro_run, venv_env

# Saves one version of a table or picture; with "kill", the process kills itself
# (SIGKILL) in the middle of writing the file, as a power cut or `kill -9` would.
SAVE_AND_MAYBE_DIE = r"""
import os, signal, sys
from importlib import import_module
import numpy as np, pandas as pd
from PIL import Image
from kedro.io import Version
import fsspec.implementations.local as local

module, name, path, version, kill = sys.argv[1:6]
dataset = getattr(import_module(module), name)(filepath=path, version=Version(None, version))
rng = np.random.default_rng(len(version))
if path.endswith(".parquet"):
    data = pd.DataFrame({"x": rng.random(100_000), "version": version})
else:
    data = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
if kill == "kill":
    write = local.LocalFileOpener.write
    def write_half_then_die(self, chunk):
        write(self, chunk[: max(1, len(chunk) // 2)])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    local.LocalFileOpener.write = write_half_then_die
dataset.save(data)
"""

OLD, NEW = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def _save(module: str, name: str, path: Path, version: str, kill: bool) -> int:
    args = [sys.executable, "-c", SAVE_AND_MAYBE_DIE, module, name, str(path), version]
    return subprocess.run([*args, "kill" if kill else "no"], capture_output=True).returncode


@pytest.mark.parametrize(
    ("name", "file"), [("ParquetDataset", "table.parquet"), ("ImageDataset", "picture.png")]
)
def test_a_save_killed_midway_leaves_the_previous_version(tmp_path, name, file):
    """Version 1 is saved; the save of version 2 is killed half-way through the file. The
    newest version Kedro finds is then still version 1, whole, and nothing under the
    final name of version 2 exists."""
    from histocluster import datasets

    path = tmp_path / file
    assert _save("histocluster.datasets", name, path, OLD, kill=False) == 0
    first = getattr(datasets, name)(filepath=str(path), version=Version(None, None)).load()
    assert _save("histocluster.datasets", name, path, NEW, kill=True) == -signal.SIGKILL

    left = sorted(p.name for p in (path / NEW).iterdir())
    assert len(left) == 1 and is_partial(left[0])  # only the hidden temporary file
    newest = getattr(datasets, name)(filepath=str(path), version=Version(None, None))
    assert newest.resolve_load_version() == OLD
    loaded = newest.load()
    if name == "ParquetDataset":
        pd.testing.assert_frame_equal(loaded, first)
    else:
        assert np.array_equal(np.asarray(loaded), np.asarray(first))


def test_the_same_kill_truncates_kedro_datasets_own_parquet(tmp_path):
    """The control: kedro-datasets' ParquetDataset, killed the same way, leaves a
    truncated newest version that every later load trips over (what the atomic types fix)."""
    from kedro.io import DatasetError
    from kedro_datasets.pandas import ParquetDataset

    path = tmp_path / "table.parquet"
    assert _save("kedro_datasets.pandas", "ParquetDataset", path, OLD, kill=False) == 0
    assert _save("kedro_datasets.pandas", "ParquetDataset", path, NEW, kill=True) == -signal.SIGKILL
    newest = ParquetDataset(filepath=str(path), version=Version(None, None))
    assert newest.resolve_load_version() == NEW
    with pytest.raises(DatasetError):
        newest.load()


def test_partitions_ignore_a_file_left_by_a_killed_save(tmp_path):
    from histocluster.datasets import OptionalPartitionedDataset

    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.new("RGB", (4, 4)).save(folder / "slide_a.png")
    partial_path(folder / "slide_b.png").write_bytes(b"\x89PNG half")
    dataset = OptionalPartitionedDataset(
        path=str(folder), dataset="histocluster.datasets.ImageDataset", filename_suffix=".png"
    )
    assert sorted(dataset.load()) == ["slide_a"]


def test_conflicts_name_the_stale_inputs():
    lineages = {
        "cells": {"cells": "B", "tiles": "A"},
        "clusters": {"clusters": "A", "cells": "A", "tiles": "A"},
        "cell_labels": {"cell_labels": "A", "clusters": "A", "cells": "A"},
    }
    (conflict,) = conflicts(lineages)
    assert (conflict.table, conflict.newest, conflict.stale) == ("cells", "B", ("cell_labels", "clusters"))
    text = describe_conflicts({"annotate_cells": [conflict]}, "kedro run --pipelines=clustering")
    assert text.startswith("The inputs of annotate_cells come from different runs")
    assert "  clusters was made from the cells of run A; that table is now from run B" in text
    assert "  cell_labels was made from the cells of run A; that table is now from run B" in text
    assert text.endswith("Fix: `kedro run --pipelines=clustering` (or `kedro run` for everything).")
    assert conflicts({"cells": {"cells": "B"}, "clusters": {"clusters": "C", "cells": "B"}}) == []


def test_run_records_round_trip_and_a_broken_one_is_named(tmp_path):
    file = tmp_path / "clusters.parquet"
    write_record(file, run="C", made_by="cluster", inputs={"cells": "B"}, lineage={"cells": "B"})
    assert read_lineage(file, "clusters", "C") == {"cells": "B", "clusters": "C"}
    assert read_lineage(tmp_path / "old.parquet", "old", "A") == {"old": "A"}  # made before records
    record_path(file).write_text("{not json")
    with pytest.raises(MixedRunsError, match="clusters.parquet.run.json: not a readable run record"):
        read_lineage(file, "clusters", "C")


def test_tables_of_other_cells_are_refused():
    """Clusters of another run's cells would otherwise show every unmatched cell as noise."""
    require_same_cells(["a", "b"], {"clusters": ["b", "a"]}, fix="kedro run")
    with pytest.raises(MixedRunsError) as info:
        require_same_cells(["a", "b", "c"], {"clusters": ["a", "x"]}, fix="kedro run --pipelines=clustering")
    assert "clusters holds 2 cells: 2 of the 3 cells have no row there, and 1 of its rows" in str(info.value)
    assert "Fix: `kedro run --pipelines=clustering`" in str(info.value)


def test_annotation_refuses_clusters_that_do_not_cover_the_cells():
    from histocluster.pipelines.annotation.nodes import annotate_cells
    from histocluster.reporting.settings import AnnotationParams

    cells = pd.DataFrame({"cell_id": ["a", "b", "c"], "slide_id": "s"})
    clusters = pd.DataFrame(
        {
            "cell_id": ["a"],
            "cluster_id": [0],
            "is_noise": [False],
            "confidence": [1.0],
            "map_x": 0.0,
            "map_y": 0.0,
        }
    )
    labels = pd.DataFrame({"cell_id": ["a"], "label": ["x"], "source": ["model"], "confidence": [1.0]})
    with pytest.raises(MixedRunsError, match="2 of the 3 cells have no row there"):
        annotate_cells(cells, clusters, labels, AnnotationParams())


def _kedro(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["kedro", "run", *args],
        cwd=root,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_a_run_killed_between_saves_is_refused_later_and_runs_never_overlap(project, cmu_slide):
    """Run A finishes. Run B starts; while it holds the lock a third run is refused with
    one Error line. B is killed (SIGKILL) right after saving its cells, before its
    clusters: the annotation pipeline then refuses to combine B's cells with A's clusters
    and labels, naming the command that fixes it; after that command it runs. (The kill
    left no stale lock: these later runs start.)"""
    root = project([cmu_slide])
    params = ["--params", "tiling.max_tiles=4"]
    kedro_run(root, None, **{"tiling.max_tiles": 4})  # run A
    cells_folder = root / "data" / "03_primary" / "cells.parquet"
    (version_a,) = [p.name for p in cells_folder.iterdir()]
    record = json.loads(
        (root / f"data/05_model_input/clusters.parquet/{version_a}/clusters.parquet.run.json").read_text()
    )
    assert record["run"] == version_a and record["made_by"] == "cluster_cells"
    assert record["lineage"]["cells"] == version_a and record["inputs"]["cells"] == version_a

    # B segments more tiles than A, so that the third run (a few seconds of start-up) meets
    # B's lock well before B saves its cells; B is killed only once the third was refused.
    run_b = _kedro(root, "--params", "tiling.max_tiles=12")
    lock = root / "data" / ".kedro-run.lock"
    refused: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not (lock.is_file() and f'"pid": {run_b.pid}' in lock.read_text()):
            assert time.monotonic() < deadline and run_b.poll() is None, "run B never took the lock"
            time.sleep(0.05)
        third = threading.Thread(
            target=lambda: refused.append(_kedro(root, "--pipelines=tiling", *params).communicate()[0])
        )
        third.start()
        while not [
            p for p in cells_folder.iterdir() if p.name != version_a and (p / "cells.parquet").is_file()
        ]:
            assert time.monotonic() < deadline and run_b.poll() is None, "run B ended before saving cells"
            time.sleep(0.02)
        third.join(timeout=120)
        os.kill(run_b.pid, signal.SIGKILL)
    finally:
        run_b.kill()
        run_b.wait()
    assert run_b.returncode == -signal.SIGKILL
    (output,) = refused
    assert "Error: Another kedro run is going on in this project" in output and "Traceback" not in output
    assert f"process {run_b.pid}" in output
    clusters = root / "data" / "05_model_input" / "clusters.parquet"
    assert [p.name for p in clusters.iterdir()] == [version_a]  # B died before clustering

    report = root / "data" / "08_reporting" / "report.html"
    report_of_a = report.stat().st_mtime_ns
    annotation = _kedro(root, "--pipelines=annotation")
    output = annotation.communicate()[0]
    assert annotation.returncode == 1 and "Traceback" not in output, output
    assert "Error: The inputs of annotate_cells" in output and "come from different runs" in output
    assert re.search(
        rf"clusters was made from the [a-z_, ]*\bcells\b[a-z_, ]* of run {version_a}; th", output
    )
    assert report.stat().st_mtime_ns == report_of_a  # nothing was drawn from mixed tables
    # One command fixes everything the refusal named (B may or may not have checked its
    # slides before it died: then the segmentation stage is named too).
    (pipelines,) = re.findall(r"Fix: `kedro run --pipelines=([a-z,]+)`", output)
    assert {"clustering", "classification"} <= set(pipelines.split(","))

    for args in ([f"--pipelines={pipelines}"], ["--pipelines=annotation"]):
        again = _kedro(root, *args)
        output = again.communicate()[0]
        assert again.returncode == 0, output
    assert report.stat().st_mtime_ns > report_of_a


def test_the_closing_summary_names_tables_not_their_run_records(tmp_path):
    """scripts/show_results.py lists each table's newest file, not the run record beside it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "show_results", Path(__file__).parents[1] / "scripts" / "show_results.py"
    )
    show_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(show_results)
    folder = tmp_path / "cells.parquet"
    for version in (OLD, NEW):
        (folder / version).mkdir(parents=True)
        (folder / version / "cells.parquet").write_bytes(b"PAR1")
        write_record(folder / version / "cells.parquet", run=version, made_by="n", inputs={}, lineage={})
    partial_path(folder / NEW / "cells.parquet").write_bytes(b"half")
    assert show_results._latest(folder) == folder / NEW / "cells.parquet"
