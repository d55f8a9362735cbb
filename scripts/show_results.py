"""Say what the last ``kedro run`` produced and where to look.

Reads the run's outputs through the project's Kedro catalog (latest versions), prints
a short summary per slide and the folders holding pictures and tables.

Usage: python scripts/show_results.py   (from the project root)
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

ROOT = Path.cwd()


def _latest(folder: Path) -> Path | None:
    """Newest file inside a Kedro versioned dataset folder (``<name>/<version>/<name>``; not
    its run record beside it, nor a save in progress)."""
    versions = sorted(p for p in folder.glob(f"*/{folder.name}") if p.is_file())
    return versions[-1] if versions else None


def main() -> None:
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        logging.getLogger("kedro").setLevel(logging.WARNING)
        catalog = session.load_context().catalog
        slides = catalog.load("slides")
        tiles = catalog.load("tiles") if catalog.exists("tiles") else None
        quality = catalog.load("tile_quality") if catalog.exists("tile_quality") else None
        cells = catalog.load("cells") if catalog.exists("cells") else None
        clusters = catalog.load("clusters") if catalog.exists("clusters") else None
        cell_labels = catalog.load("cell_labels") if catalog.exists("cell_labels") else None
        checks = catalog.load("slide_checks") if catalog.exists("slide_checks") else None
    checked = checks.set_index("slide_id") if checks is not None else None
    red, plain = ("\033[31m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print("\nhistocluster results")
    print("====================")
    for row in slides.itertuples():
        if row.status != "ok":
            print(f"  {row.slide_id}: NOT READ ({row.error})")
            continue
        n_tiles = int((tiles["slide_id"] == row.slide_id).sum()) if tiles is not None else 0
        line = f"  {row.slide_id}: {row.width}×{row.height} px at {row.mpp_x:.3f} µm/px, {n_tiles} tiles"
        if quality is not None:
            kept = int(quality.loc[quality["slide_id"] == row.slide_id, "keep"].sum())
            line += f", {kept} kept by the quality filter"
        if cells is not None:
            line += f", {int((cells['slide_id'] == row.slide_id).sum())} cells"
        if clusters is not None:
            mine = clusters[clusters["slide_id"] == row.slide_id]
            line += f" in {mine.loc[~mine['is_noise'], 'cluster_id'].nunique()} clusters"
        print(line)
        if checked is not None and row.slide_id in checked.index:
            check = checked.loc[row.slide_id]
            if check["status"] == "ok":
                print(
                    f"    scale {row.mpp_x:.3g} µm/px from {row.mpp_source}: {check['cells_per_mm2']:,.0f} cells "
                    f"per mm² of tissue, median nucleus {check['median_area_um2']:.1f} µm² (usual range)"
                )
            else:
                print(
                    f"{red}    {check['status'].upper()}: {check['verdict']}\n    Fix: {check['fix']}{plain}"
                )
    if clusters is not None and len(clusters):
        n_clusters = clusters.loc[~clusters["is_noise"], "cluster_id"].nunique()
        print(
            f"  all slides: {len(clusters)} cells in {n_clusters} clusters ({int(clusters['is_noise'].sum())} noise)"
        )
    if cell_labels is not None and len(cell_labels):
        counts = cell_labels["label"].value_counts()
        print("  labels: " + ", ".join(f"{label} {n}" for label, n in counts.items()))
        if set(counts.index) <= {"unlabelled", "review"}:
            print(
                "  No cluster is named yet: open results/report.html → Galleries, type names in the cards,\n"
                "  press Download cluster_labels.yml, save it in conf/local/ (or write it by hand:\n"
                "  `0: lymphocyte`), then `kedro run --pipelines=relabel` (names → every cell, GeoJSON,\n"
                "  report, and the cell-type model that `kedro run --pipelines=apply` uses on new slides),\n"
                "  or set OPENAI_API_KEY for a model to suggest names."
            )
    print("\nTables (Kedro-versioned, newest shown):")
    for folder in sorted([*ROOT.glob("data/0[1-7]_*/*.parquet"), *ROOT.glob("data/08_reporting/*.csv")]):
        latest = _latest(folder)
        if latest:
            print(f"  {latest.relative_to(ROOT)}")
    print("\nPictures (open these):")
    for folder in sorted(ROOT.glob("data/08_reporting/*")):
        files = sorted(folder.rglob("*.png")) if folder.is_dir() else []
        if files:
            print(f"  {folder.relative_to(ROOT)}/  ({len(files)} PNG)")
    for figure in sorted(ROOT.glob("data/08_reporting/*.png")):
        print(f"  {figure.relative_to(ROOT)}")
    if (ROOT / "data/08_reporting/cluster_map.json").exists():
        print("  data/08_reporting/cluster_map.json  (interactive cell map: kedro viz shows it)")
    report = ROOT / "data/08_reporting/report.html"
    view = "results" if (ROOT / "results" / "report.html").exists() else "data/08_reporting"
    if report.exists():
        print(f"\nStart here: {view}/report.html  (open it in a browser)")
        print(f"QuPath: {view}/qupath/<slide_id>.geojson (File > Import objects)")
        print(f"Spreadsheet / R: {view}/cells_csv/<slide_id>.csv (one row per cell)")
        if view == "results":
            print("results/ links to the newest version of every output (tables too: results/*.parquet)")
    print(
        "\nBrowse the pipeline and its data: kedro viz run   (or `make viz`: a static build served on http://127.0.0.1:4141)"
    )


if __name__ == "__main__":
    main()
