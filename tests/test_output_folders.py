"""Output folders checked before a run, and disk errors during it said in one line."""

from __future__ import annotations

import errno
from pathlib import Path

from kedro.io import DatasetError

from histocluster.output_folders import describe_disk_error, disk_error, folder_problem, unwritable_folders

from .conftest import kedro_user_error


def saving_failed(path: str, code: int) -> DatasetError:
    """What Kedro raises when a dataset's save hits an OSError."""
    try:
        try:
            raise OSError(code, "(the OS message)")
        except OSError as exc:
            raise DatasetError(
                f"Failed while saving data to dataset ParquetDataset(filepath={path}).\n{exc}"
            ) from exc
    except DatasetError as exc:
        return exc


def test_a_writable_folder_passes_and_one_below_a_file_is_named(tmp_path):
    assert folder_problem(tmp_path / "new" / "deeper") is None  # created later by the save
    assert not list(tmp_path.iterdir())  # the probe leaves nothing behind, creates nothing
    (tmp_path / "data").write_text("")
    assert folder_problem(tmp_path / "data" / "08_reporting").endswith("data is a file, not a folder")
    problems = unwritable_folders({str(tmp_path / "data" / "x"): {"b", "a"}, str(tmp_path / "ok"): {"c"}})
    assert len(problems) == 1 and problems[0].endswith("(for a, b)")


def test_only_errors_a_person_fixes_on_the_machine_are_disk_errors(tmp_path):
    assert disk_error(saving_failed("x", errno.ENOSPC)).errno == errno.ENOSPC
    assert disk_error(saving_failed("x", errno.EROFS)).errno == errno.EROFS
    assert disk_error(saving_failed("x", errno.ENOENT)) is None  # a bug or a missing input: traceback
    assert disk_error(ValueError("bad value")) is None
    assert describe_disk_error(ValueError("bad value"), {}) is None


def test_the_failed_dataset_is_named_by_its_path(tmp_path):
    outputs = {"cells": "/p/data/03_primary/cells.parquet", "tiles": "/p/data/02_intermediate/tiles.parquet"}
    line = describe_disk_error(
        saving_failed("/p/data/03_primary/cells.parquet/2026/cells.parquet", errno.EROFS), outputs
    )
    assert line.startswith(
        "Could not write /p/data/03_primary/cells.parquet (dataset 'cells'): Read-only file system"
    )
    assert "\n" not in line and "mounted read-only" in line
    unknown = describe_disk_error(saving_failed("/elsewhere", errno.ENOSPC), outputs)
    assert unknown.startswith("Could not write the run's output folders: No space left on device")


def test_a_broken_labels_file_stops_classification_before_the_model_is_asked(project):
    root = project([])
    (root / "conf" / "local" / "cluster_labels.yml").write_text("7: lymphocyte\ncluster 7: fibroblast\n")
    output = kedro_user_error(root, "--pipelines=classification")
    assert "cluster 7 is named twice, on lines 1 and 2" in output
    assert "Running node" not in output


def test_a_file_half_written_when_the_disk_fills_is_removed(project, cmu_slide, monkeypatch):
    """The slide table's save writes part of its file, then the disk is full: the run
    ends with the one-line error, and neither the partial file nor this run's version of
    the table is left (nor its run record), so the next stage or run never loads it as
    the latest slide table."""
    import pytest
    from kedro_datasets.pandas import ParquetDataset

    from histocluster.output_folders import OutputFolderError

    from .conftest import kedro_run

    root = project([cmu_slide])
    written = []

    def fill_the_disk(self, data):
        path = Path(str(self._get_save_path()))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1 and then nothing")
        written.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ParquetDataset, "save", fill_the_disk)
    with pytest.raises(OutputFolderError, match=r"Could not write .*slides.parquet \(dataset 'slides'\)"):
        kedro_run(root, "tiling", **{"tiling.max_tiles": 2})
    assert len(written) == 1 and not written[0].exists()
    assert written[0].name.startswith(".slides.partial-")  # saved under a temporary name
    version_folder = written[0].parent
    assert not (version_folder / "slides.parquet").exists()
    assert not list(version_folder.glob("*.run.json"))


def test_the_results_view_is_swapped_whole_and_skips_what_does_not_exist(tmp_path):
    from histocluster.reporting.results_view import refresh_view

    data = tmp_path / "project" / "data"
    data.mkdir(parents=True)
    (data / "a.csv").write_text("a\n")
    (data / "b.csv").write_text("b\n")
    view = tmp_path / "project" / "results"
    made = refresh_view(view, {"a.csv": data / "a.csv", "gone.csv": data / "gone.csv"})
    assert sorted(made) == ["a.csv"] and sorted(p.name for p in view.iterdir()) == ["a.csv"]
    made = refresh_view(view, {"b.csv": data / "b.csv"})  # the next run: no link of the last one left
    assert sorted(p.name for p in view.iterdir()) == ["b.csv"]
    assert (view / "b.csv").read_text() == "b\n"
    assert not [p for p in view.parent.iterdir() if p.name.startswith(".results")]  # no leftovers
    moved = tmp_path / "moved"
    (tmp_path / "project").rename(moved)  # relative links: the view moves with the project
    assert (moved / "results" / "b.csv").read_text() == "b\n"
