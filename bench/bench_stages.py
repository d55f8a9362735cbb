"""Per-node cost of a whole ``kedro run`` on a slide: wall and CPU seconds, slide reads,
pixels decoded, peak RSS — and how often each kept tile is decoded before clustering.

Runs the project's real Kedro session (all pipelines, ``conf/base``) in a throw-away copy
of the project (configuration from the repository of the imported ``histocluster``; data
in a temporary folder), with a hook that times every node and a counter on the slide
readers' ``read_region``. Prints one row per node and these totals:

* *reads of kept tiles before clustering*: for every kept tile, the number of tile-sized
  slide reads up to the ``clustering`` pipeline's last node whose box covers most of the
  tile (the quality check, segmentation, pixel features, crops: each counts; whole-slide
  thumbnail blocks do not, they are in the node rows);
* pixels decoded per stage, in megapixels at the level read.

A node's time runs from loading its first input to saving its last output, so pictures
drawn lazily when saved count for the node that made them. Peak RSS is the high-water mark
of each node alone (``/proc/self/clear_refs`` resets it before the node; Linux only, where
the kernel allows it; otherwise the process's). One process; ``--threads 1`` pins BLAS/OpenMP/torch.

Then one row per stage (the pipeline a node belongs to): wall s, CPU s, cells per CPU-second
(the run's cells over the stage's CPU time), peak RSS and bytes written under ``data/``;
end to end cells per CPU-second; and a projection of each figure to a slide of 10⁶ cells.
With ``--fit-with other.json`` (this bench's ``--json`` from a run on a slide of another
size) each figure is fitted as fixed + per-cell cost through the two runs; without it,
time and bytes are scaled by 10⁶ / cells (fixed costs such as start-up and compilation
then count as if per cell) and RSS is not projected.

For a whole-slide figure, build a big slide from real tissue first
(``bench/make_big_slide.py``) and run it without ``max_tiles``::

    python bench/make_big_slide.py --out /tmp/big20k.tif --size 20000
    python bench/bench_stages.py /tmp/big20k.tif --params 'tiling.max_tiles=null'

Usage:
    python bench/bench_stages.py data/01_raw/slides/CMU-1-Small-Region.svs [--threads 1]
        [--params 'tiling.max_tiles=20'] [--json out.json]
"""

from __future__ import annotations

import os
import sys

if "--threads" in sys.argv:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "OPENCV_FOR_THREADS_NUM",
    ):
        os.environ[_var] = _n
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import histocluster  # noqa: E402

ROOT = Path(histocluster.__file__).resolve().parents[2]


def _reader_classes():
    """The slide reader classes of the imported code (wherever the package keeps them)."""
    try:
        from histocluster.wsi import slides
    except ImportError:  # the flat layout before the stage packages
        from histocluster import slides
    return slides.OpenSlideReader, slides.ImageReader


class ReadCounter:
    """Counts ``read_region`` calls per node: boxes (level-0) and pixels decoded."""

    def __init__(self) -> None:
        self.node = "(outside nodes)"
        self.reads: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
        self.pixels: dict[str, float] = defaultdict(float)

    def install(self) -> None:
        for cls in _reader_classes():
            original = cls.read_region

            def read_region(reader, location, level, size, _original=original):
                ds = reader.level_downsamples[level]
                self.reads[self.node].append((location[0], location[1], size[0] * ds, size[1] * ds))
                self.pixels[self.node] += size[0] * size[1]
                return _original(reader, location, level, size)

            cls.read_region = read_region


def _peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StageTimer:
    """Kedro hooks: per node, from loading its first input to saving its last output (lazy
    pictures are drawn when saved, so they count): wall, CPU, reads and peak RSS."""

    def __init__(self, counter: ReadCounter, data: Path | None = None) -> None:
        self.counter = counter
        self.data = data
        self.rows: list[dict] = []
        self.current: str | None = None
        self.base_mib = _peak_mib()

    def _bytes(self) -> int:
        """Bytes under ``data/`` (the raw slides are links, not counted)."""
        if self.data is None:
            return 0
        return sum(p.stat().st_size for p in self.data.rglob("*") if p.is_file() and not p.is_symlink())

    def _cpu(self) -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    def _close(self) -> None:
        if self.current is None:
            return
        name = self.current
        self.rows.append(
            {
                "node": name,
                "wall_s": time.perf_counter() - self._start[0],
                "cpu_s": self._cpu() - self._start[1],
                "reads": len(self.counter.reads[name]),
                "mpx": self.counter.pixels[name] / 1e6,
                "peak_mib": _peak_mib(),
                "bytes": self._bytes() - self._start[2],
            }
        )
        self.current = None
        self.counter.node = "(outside nodes)"

    def switch(self, node) -> None:
        if node is None or node.name == self.current:
            return
        self._close()
        self.current = node.name
        self.counter.node = node.name
        _peak_reset()
        self._start = (time.perf_counter(), self._cpu(), self._bytes())


def _hook(timer: StageTimer):
    from kedro.framework.hooks import hook_impl

    class Hook:
        @hook_impl
        def before_dataset_loaded(self, dataset_name, node):
            timer.switch(node)

        @hook_impl
        def before_node_run(self, node):
            timer.switch(node)

        @hook_impl
        def after_dataset_saved(self, dataset_name, data, node):
            timer.switch(node)

        @hook_impl
        def after_pipeline_run(self):
            timer._close()

    return Hook()


def _project(slide: Path, where: Path) -> Path:
    for name in ("pyproject.toml",):
        shutil.copy(ROOT / name, where / name)
    shutil.copytree(ROOT / "conf" / "base", where / "conf" / "base")
    (where / "conf" / "local").mkdir(parents=True)
    (where / "src").mkdir()  # Kedro wants the folder; the code measured is the code imported
    raw = where / "data" / "01_raw" / "slides"
    raw.mkdir(parents=True)
    os.symlink(slide.resolve(), raw / slide.name)
    return where


def _kept_tiles(project: Path):
    import pandas as pd

    def newest(name: str) -> Path:
        return sorted((project / "data").glob(f"*/{name}.parquet/*/{name}.parquet"))[-1]

    tiles = pd.read_parquet(newest("tiles"))
    quality = pd.read_parquet(newest("tile_quality"))
    return tiles.merge(quality.loc[quality["keep"], ["tile_id"]], on="tile_id")


def _covers(read: tuple, tile) -> bool:
    """The read's box holds at least 90% of the tile's box, and is a tile-sized read (not
    a whole-slide or thumbnail block: those are counted per node in the table)."""
    x, y, w, h = read
    if w * h > 4 * tile.w * tile.h:
        return False
    ix = max(0.0, min(x + w, tile.x + tile.w) - max(x, tile.x))
    iy = max(0.0, min(y + h, tile.y + tile.h) - max(y, tile.y))
    return ix * iy >= 0.9 * tile.w * tile.h


STAGES = ("tiling", "segmentation", "filtering", "clustering", "classification", "annotation")


def _cells(project: Path) -> int:
    import pyarrow.parquet as pq

    tables = sorted((project / "data").glob("03_primary/cells.parquet/*/cells.parquet"))
    return pq.ParquetFile(tables[-1]).metadata.num_rows if tables else 0


def _stage_table(timer: StageTimer, cells: int, pipelines, other: dict | None = None) -> dict:
    """Prints the per-stage table and the projection to 10⁶ cells (fitted through
    ``other``, a run on another size, when given); returns the figures."""
    stage_of = {}
    for stage in STAGES:
        if stage in pipelines:
            for node in pipelines[stage].nodes:
                stage_of.setdefault(node.name, stage)
    figures: dict[str, dict] = {}
    for row in timer.rows:
        stage = figures.setdefault(
            stage_of.get(row["node"], "other"), {"wall_s": 0.0, "cpu_s": 0.0, "peak_mib": 0.0, "bytes": 0}
        )
        stage["wall_s"] += row["wall_s"]
        stage["cpu_s"] += row["cpu_s"]
        stage["peak_mib"] = max(stage["peak_mib"], row["peak_mib"])
        stage["bytes"] += row["bytes"]
    total = {
        "wall_s": sum(f["wall_s"] for f in figures.values()),
        "cpu_s": sum(f["cpu_s"] for f in figures.values()),
        "peak_mib": max((f["peak_mib"] for f in figures.values()), default=0.0),
        "bytes": sum(f["bytes"] for f in figures.values()),
    }
    base = timer.base_mib

    def project(key: str, name: str, f: dict) -> float:
        """The figure at 10⁶ cells: through two runs, or scaled from this one."""
        if other is not None and other["cells"] != cells:
            theirs = other["total"] if name == "whole run" else other["stages"].get(name)
            if theirs is not None:
                slope = (f[key] - theirs[key]) / (cells - other["cells"])
                return f[key] + slope * (1e6 - cells)
        if key == "peak_mib":
            return float("nan")
        return f[key] * 1e6 / cells if cells else float("nan")

    def line(name: str, f: dict) -> str:
        rate = cells / f["cpu_s"] if f["cpu_s"] > 0 else float("inf")
        return (
            f"{name:15s} {f['wall_s']:8.1f} {f['cpu_s']:8.1f} {rate:10.0f} {f['peak_mib']:9.0f} "
            f"{f['bytes'] / 1e6:9.1f} | {project('wall_s', name, f) / 3600:7.2f} "
            f"{project('cpu_s', name, f) / 3600:7.2f} {project('peak_mib', name, f) / 1024:7.1f} "
            f"{project('bytes', name, f) / 1e9:7.1f}"
        )

    header = (
        f"{'stage':15s} {'wall s':>8s} {'CPU s':>8s} {'cells/CPUs':>10s} {'peak MiB':>9s} {'MB written':>9s} "
        f"| {'wall h':>7s} {'CPU h':>7s} {'RSS GiB':>7s} {'GB':>7s}"
    )
    how = (
        f"fitted through this run and one of {other['cells']:,} cells"
        if other is not None and other["cells"] != cells
        else "scaled from this run"
    )
    print(f"\n{cells:,} cells; per stage, and projected to a slide of 10⁶ cells ({how}; right of |):")
    print(header)
    print("-" * len(header))
    for name in (*STAGES, "other"):
        if name in figures:
            print(line(name, figures[name]))
    print("-" * len(header))
    print(line("whole run", total))
    print(f"(process before the first node: {base:.0f} MiB)")
    return {"cells": cells, "stages": figures, "total": total, "base_mib": base}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("slide", type=Path)
    parser.add_argument("--threads", default=None, help="pin BLAS/OpenMP/torch threads (set before imports)")
    parser.add_argument("--params", default="", help="runtime parameters, as kedro run --params")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--fit-with",
        type=Path,
        default=None,
        help="--json of a run on another size: fit fixed + per-cell costs",
    )
    parser.add_argument("--keep", action="store_true", help="keep the project copy (path printed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))

    from kedro.framework.cli.utils import _split_params
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    counter = ReadCounter()
    counter.install()
    folder = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    project = _project(args.slide, folder)
    timer = StageTimer(counter, project / "data")
    bootstrap_project(project)
    extra = _split_params(None, None, args.params) if args.params else {}
    start = time.perf_counter()
    # From the project folder, as `kedro run`: parameters that name folders (the slide store,
    # the model-answer cache) are relative to it.
    with (
        contextlib.chdir(project),
        KedroSession.create(project_path=project, runtime_params=extra) as session,
    ):
        session._hook_manager.register(_hook(timer))
        session.run()
    total_wall = time.perf_counter() - start

    from kedro.framework.project import pipelines

    clustering_nodes = {n.name for n in pipelines["clustering"].nodes}
    upto = [r["node"] for r in timer.rows]
    last_clustering = max(i for i, r in enumerate(timer.rows) if r["node"] in clustering_nodes)
    before = set(upto[: last_clustering + 1])
    kept = _kept_tiles(project)
    reads_before = [read for node in before for read in counter.reads[node]]
    per_tile = [sum(_covers(read, tile) for read in reads_before) for tile in kept.itertuples()]

    header = f"{'node':32s} {'wall s':>8s} {'CPU s':>8s} {'reads':>7s} {'Mpx':>8s} {'peak MiB':>9s}"
    print(f"\n{args.slide.name}: {len(kept)} kept tiles, whole run {total_wall:.1f} s wall")
    print(header)
    print("-" * len(header))
    for row in timer.rows:
        print(
            f"{row['node']:32s} {row['wall_s']:8.2f} {row['cpu_s']:8.2f} {row['reads']:7d} "
            f"{row['mpx']:8.2f} {row['peak_mib']:9.0f}"
        )
    print("-" * len(header))
    print(
        f"{'total':32s} {sum(r['wall_s'] for r in timer.rows):8.2f} {sum(r['cpu_s'] for r in timer.rows):8.2f} "
        f"{sum(r['reads'] for r in timer.rows):7d} {sum(r['mpx'] for r in timer.rows):8.2f} "
        f"{max(r['peak_mib'] for r in timer.rows):9.0f}"
    )
    if per_tile:
        print(
            f"reads of each kept tile before clustering: mean {sum(per_tile) / len(per_tile):.2f}, "
            f"min {min(per_tile)}, max {max(per_tile)} (over {len(per_tile)} kept tiles)"
        )
    other = json.loads(args.fit_with.read_text())["stages"] if args.fit_with else None
    stages = _stage_table(timer, _cells(project), pipelines, other)
    if args.json:
        args.json.write_text(
            json.dumps({"rows": timer.rows, "stages": stages, "reads_per_kept_tile": per_tile}, indent=2)
        )
    if args.keep:
        print(f"project copy kept in {project}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
