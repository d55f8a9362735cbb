"""The 2-D cell map: cost and faithfulness of ways to draw it, on a run's own embeddings.

Reads a run's ``cell_embeddings`` (``matrix.npy`` + ``cell_ids.parquet``) and ``clusters``
(their ``cluster_id``), reduces the embeddings as the clustering stage does (PCA to
``n_components``), then draws the map each way in a fresh process (so numba's compile is
paid as in a real run) and prints, per way:

* wall and CPU seconds of the map alone;
* *trustworthiness* (scikit-learn, k = 15, on a fixed random 4,000 cells): how far the map's
  neighbours are true neighbours in the reduced space (1 = all);
* *cluster agreement*: the share of each cell's 15 nearest cells on the map that are in its
  own cluster — whether the clusters a person names show as regions of the map;
* *agreement with the reference*: the same share, with the reference way's map neighbours
  in place of the clusters (how much of the reference picture's neighbourhoods survive).

The reference is the first way given. Ways: ``umap-nndescent:N:EPOCHS:INIT`` (umap-learn
with its own pynndescent graph, fitted on N cells, others placed by neighbours;
``umap-nndescent:50000:200:spectral`` is the map before issue 14),
``umap-exact:N:EPOCHS:INIT`` (the graph from scikit-learn; ``umap-exact`` alone is today's
default: 50,000 cells, 500 epochs up to 10,000 cells and 100 above, PCA start), ``pca``.

Usage:
    python bench/bench_cell_map.py RUN_DATA_FOLDER [--ways umap-nndescent:50000:200:spectral
        umap-exact umap-exact:50000:200:spectral umap-exact:20000 pca]

``RUN_DATA_FOLDER`` is a project's ``data/`` (e.g. a ``bench_stages.py --keep`` copy); the
newest version of each table is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _newest(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise SystemExit(f"{folder}: nothing matches {pattern}")
    return found[-1]


def load_run(data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's embeddings and each cell's cluster id, in the embeddings' order."""
    import pandas as pd

    version = _newest(data / "04_feature" / "cell_embeddings", "*/cell_embeddings")
    matrix = np.load(version / "matrix.npy")
    ids = pd.read_parquet(version / "cell_ids.parquet").iloc[:, 0].to_numpy()
    clusters = pd.read_parquet(_newest(data / "05_model_input" / "clusters.parquet", "*/clusters.parquet"))
    cluster_of = clusters.set_index("cell_id")["cluster_id"]
    return matrix.astype(np.float32), cluster_of.loc[ids].to_numpy()


def draw(way: str, reduced: np.ndarray) -> np.ndarray:
    """The map drawn ``way`` (in this process)."""
    from histocluster.clustering import reduction
    from histocluster.clustering.settings import ReductionSettings

    method, *options = way.split(":")
    if method == "pca":
        return reduction.cell_map(reduced, ReductionSettings(map_method="pca"))[1]
    cells, epochs, init = (options + [None, None, None])[:3]
    settings = ReductionSettings(
        map_method="umap",
        map_max_cells=int(cells or 50_000),
        map_epochs=int(epochs) if epochs else None,
        map_init=init or "pca",
    )
    if method == "umap-nndescent":
        reduction.EXACT_NEIGHBOURS_MAX = -1  # the graph from pynndescent, as before
    elif method != "umap-exact":
        raise SystemExit(f"unknown way {way!r}")
    return reduction.cell_map(reduced, settings)[1]


def _child(way: str, reduced_path: Path, out: Path) -> None:
    reduced = np.load(reduced_path)
    wall, cpu = time.perf_counter(), time.process_time()
    coords = draw(way, reduced)
    times = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    np.save(out, coords)
    out.with_suffix(".json").write_text(json.dumps(times))


def neighbours(points: np.ndarray, k: int = 15) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points, return_distance=False)[:, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument(
        "--ways",
        nargs="+",
        default=[
            "umap-nndescent:50000:200:spectral",
            "umap-exact",
            "umap-exact:50000:200:spectral",
            "umap-exact:50000:200:pca",
            "umap-exact:20000",
            "pca",
        ],
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    from sklearn.manifold import trustworthiness

    from histocluster.clustering.reduction import fit_reduce
    from histocluster.clustering.settings import ReductionSettings

    matrix, cluster_ids = load_run(args.data)
    reduced = fit_reduce(matrix, ReductionSettings())[1]
    print(f"{len(reduced):,} cells, {reduced.shape[1]} reduced dimensions, {len(set(cluster_ids))} clusters")
    rng = np.random.default_rng(0)
    probe = np.sort(rng.choice(len(reduced), min(4000, len(reduced)), replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "reduced.npy", reduced)
        reference = None
        print(f"{'way':24} {'wall s':>7} {'CPU s':>7} {'trust':>6} {'cluster agr':>11} {'ref agr':>7}")
        for way in args.ways:
            out = Path(tmp) / f"{way.replace(':', '_')}.npy"
            env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
            subprocess.run(
                [sys.executable, __file__, "--child", way, str(Path(tmp) / "reduced.npy"), str(out)],
                check=True,
                env=env,
            )
            coords = np.load(out)
            times = json.loads(out.with_suffix(".json").read_text())
            near = neighbours(coords)
            trust = trustworthiness(reduced[probe], coords[probe], n_neighbors=15)
            agreement = (cluster_ids[near] == cluster_ids[:, None]).mean()
            if reference is None:
                reference, ref_agreement = near, 1.0
            else:
                ref_agreement = np.mean(
                    [len(set(a) & set(b)) / len(a) for a, b in zip(near, reference, strict=True)]
                )
            print(
                f"{way:24} {times['wall']:7.1f} {times['cpu']:7.1f} {trust:6.3f} {agreement:11.3f} {ref_agreement:7.3f}"
            )


if __name__ == "__main__":
    main()
