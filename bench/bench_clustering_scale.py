"""How the cost of reduction and clustering grows with the number of cells.

Synthetic cells: ``--blobs`` Gaussian blobs in a ``--dims``-d feature space (float32).
For each size, each stage runs in a fresh process (so its peak memory is its own) with
the project's functions: ``pca`` and ``umap`` (:func:`histocluster.clustering.reduction.fit_reduce`,
to 30 and 50 components), then the clusterers (:func:`histocluster.clustering.clusterers.cluster_cells`,
confidence included) on the PCA output, and representatives
(:func:`histocluster.clustering.summary.pick_representatives`). Printed: seconds, the
process's peak resident memory, how much of it the stage added above the peak before it
(data generation and, for clusterers, the PCA), and the input matrix's own size.

Stages too slow for a size on this machine are skipped (``--limits``). With
``--device gpu`` the same stages run on cuML.

Usage:
    python bench/bench_clustering_scale.py                       # 1e4, 1e5, 1e6 on the CPU
    python bench/bench_clustering_scale.py --sizes 10000 --stages kmeans,leiden
    python bench/bench_clustering_scale.py --device gpu
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

STAGES = ["pca", "umap", "map", "kmeans", "leiden", "hdbscan", "dbscan", "representatives"]
DEFAULT_LIMITS = "umap=100000,hdbscan=100000,dbscan=100000,leiden=100000"


def data(n: int, dims: int, blobs: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (blobs, dims)).astype(np.float32)
    x = rng.standard_normal((n, dims), dtype=np.float32)
    x += centres[rng.integers(0, blobs, n)]
    return x


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(stage: str, n: int, dims: int, blobs: int, device: str) -> dict:
    """One stage on fresh data, in this process."""
    from histocluster.clustering.clusterers import cluster_cells
    from histocluster.clustering.reduction import fit_reduce
    from histocluster.clustering.settings import ClusterSettings, ReductionSettings
    from histocluster.clustering.summary import pick_representatives

    x = data(n, dims, blobs)
    slides = np.array(["s"], dtype=object).repeat(n)
    if stage not in ("pca", "umap"):  # map and clusterers work on the reduced space, as in the pipeline
        x = fit_reduce(x, ReductionSettings(method="pca", n_components=30), device)[1]
    before = peak_mib()
    t = time.perf_counter()
    if stage in ("pca", "umap"):
        components = 30 if stage == "pca" else 50
        fit_reduce(x, ReductionSettings(method=stage, n_components=components, random_state=None), device)
        detail = f"{dims} → {components} dims"
    elif stage == "map":
        from histocluster.clustering.reduction import cell_map

        cell_map(x, ReductionSettings(random_state=None), device)
        detail = "2-D UMAP map (pipeline default: fitted on ≤ 50,000 cells, the rest placed by k-NN)"
    elif stage == "representatives":
        import pandas as pd

        labels = np.random.default_rng(0).integers(0, 100, n)
        table = pd.DataFrame(
            {
                "cell_id": np.arange(n).astype(str),
                "slide_id": "s",
                "tile_id": (np.arange(n) // 300).astype(str),
                "cluster_id": labels,
                "confidence": np.random.default_rng(1).random(n),
            }
        )
        t = time.perf_counter()
        reps = pick_representatives(table, 9)
        detail = f"{len(reps)} representatives of 100 clusters"
    else:
        result = cluster_cells(x, slides, ClusterSettings(method=stage), device)
        k = len(np.unique(result.labels[result.labels >= 0]))
        detail = f"{k} clusters, {result.is_noise.mean():.1%} noise"
    return {
        "seconds": time.perf_counter() - t,
        "peak_mib": peak_mib(),
        "before_mib": before,
        "input_mib": x.nbytes / 2**20,
        "detail": detail,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", type=int, default=64)
    parser.add_argument("--blobs", type=int, default=20)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--limits", default=DEFAULT_LIMITS, help="stage=max cells (skip above)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, n = args.child.split(":")
        print(json.dumps(run_stage(stage, int(n), args.dims, args.blobs, args.device)))
        return
    limits = {k: int(v) for k, v in (item.split("=") for item in args.limits.split(",") if item)}
    print(f"{args.dims}-d float32, {args.blobs} Gaussian blobs, device {args.device}")
    print(
        f"{'cells':>9} {'stage':16s} {'seconds':>9} {'peak MiB':>9} {'stage MiB':>9} {'input MiB':>9}  detail"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        for stage in args.stages.split(","):
            if n > limits.get(stage, n):
                print(f"{n:9d} {stage:16s} {'skipped':>9}  (limit {limits[stage]} cells: --limits)")
                continue
            command = [sys.executable, __file__, "--child", f"{stage}:{n}", "--dims", str(args.dims)]
            command += ["--blobs", str(args.blobs), "--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{n:9d} {stage:16s} {'failed':>9}  {done.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"{n:9d} {stage:16s} {r['seconds']:9.2f} {r['peak_mib']:9.0f} "
                f"{r['peak_mib'] - r['before_mib']:9.0f} {r['input_mib']:9.0f}  {r['detail']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
