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

    def __init__(self, counter: ReadCounter) -> None:
        self.counter = counter
        self.rows: list[dict] = []
        self.current: str | None = None

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
        self._start = (time.perf_counter(), self._cpu())


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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("slide", type=Path)
    parser.add_argument("--threads", default=None, help="pin BLAS/OpenMP/torch threads (set before imports)")
    parser.add_argument("--params", default="", help="runtime parameters, as kedro run --params")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
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
    timer = StageTimer(counter)
    folder = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    project = _project(args.slide, folder)
    bootstrap_project(project)
    extra = _split_params(None, None, args.params) if args.params else {}
    start = time.perf_counter()
    with KedroSession.create(project_path=project, runtime_params=extra) as session:
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
    if args.json:
        args.json.write_text(json.dumps({"rows": timer.rows, "reads_per_kept_tile": per_tile}, indent=2))
    if args.keep:
        print(f"project copy kept in {project}")
    else:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
