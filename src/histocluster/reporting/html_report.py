"""The run's HTML report: one self-contained page (pictures embedded), no server needed.

Rendered from a Jinja2 template (``templates/report.html.j2``) with autoescape on, so a
label or slide name is shown as text, never read as markup, and the run summary is
embedded as JSON that ``JSON.parse`` reads. Every picture comes from an earlier stage's
saved PNG (tiling overview, cell overview, contact sheets, cluster plots, galleries,
label counts): the report reads no slide and draws nothing again.

Sections: slides, filtering, segmentation, clusters, galleries, labels. A stage that has
nothing to show says so.

The galleries section is the naming workbench: a card per cluster in the order a person
should name them (:func:`~histocluster.labelling.cluster_labels.naming_order`), each with its
gallery, size, the cells each slide gives it, its current name and where that came from, and
a name field (the vocabulary as suggestions, free text allowed). A button downloads the
labels file in the format the pipeline reads (keyed to this clustering), and the page says
where to save it and the one command that applies it. No server: the file is made in the
browser.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from PIL import Image

from histocluster.labelling.cluster_labels import FILE_NOT_USED, REVIEW, UNLABELLED, labels_file_state
from histocluster.labelling.labels_file import match_vocabulary
from histocluster.lazy import materialise
from histocluster.reporting.colours import label_colours
from histocluster.reporting.drawing import slides_in_words
from histocluster.wsi.scale import describe_source

SECTIONS = ["slides", "filtering", "segmentation", "clusters", "galleries", "labels"]

Pictures = Mapping[str, Callable[[], Image.Image] | Image.Image]


def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("histocluster.reporting", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
    )


def data_url(image: Image.Image, max_side: int = 900, quality: int = 80) -> str:
    """A picture as a WebP data URL (shrunk to ``max_side``): a gallery is 122 kB against
    187 kB as JPEG at the same look, so a 100-cluster report is ~10 MB smaller (every
    current browser shows WebP)."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=2)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


def table_html(frame: pd.DataFrame, max_rows: int = 200) -> Markup:
    """A table (cells escaped by pandas), safe to place in the page as is."""
    if frame.empty:
        return Markup('<p class="empty">nothing to show</p>')
    return Markup(
        frame.head(max_rows).to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}", escape=True)
    )


def _picture(pictures: Pictures, key: str) -> Image.Image | None:
    item = pictures.get(key)
    return None if item is None else materialise(item)


def _label_table(cluster_labels: pd.DataFrame) -> pd.DataFrame:
    """The cluster-label table as the report shows it: without the raw votes, and without
    the model and cost columns when no model was asked."""
    unasked = [c for c in ("model", "cost_usd") if c in cluster_labels and cluster_labels[c].isna().all()]
    return cluster_labels.drop(columns=["votes", *unasked], errors="ignore")


@dataclass(frozen=True)
class Workbench:
    """What the naming workbench needs besides the tables: where the pipeline reads a
    person's labels, the vocabulary to suggest, and the command that applies the file."""

    labels_file: str = "conf/local/cluster_labels.yml"
    vocabulary: list[str] = field(default_factory=list)
    command: str = "kedro run --pipelines=relabel"


def cluster_cards(
    clusters: pd.DataFrame, cluster_labels: pd.DataFrame, galleries: Pictures, max_side: int = 1100
) -> list[dict]:
    """One card per cluster (noise excluded) in naming order (ranked clusters first, by rank;
    then the rest by id): id, size, per-slide counts, current name, its source and agreement,
    the person's name (prefilled in the field), rank, the gallery picture, and the type the
    type network gave most of its cells with their share (``network_type`` of the summary,
    when the run has it)."""
    labels = cluster_labels.set_index("cluster_id") if len(cluster_labels) else pd.DataFrame()
    cards = []
    for row in clusters.to_dict("records"):
        cluster_id = int(row["cluster_id"])
        named = labels.loc[cluster_id].to_dict() if cluster_id in labels.index else {}
        rank = named.get("naming_rank")
        picture = _picture(galleries, f"cluster_{cluster_id:03d}")
        per_slide = json.loads(row.get("slide_counts") or "{}")
        cards.append(
            {
                "cluster_id": cluster_id,
                "size": int(row["size"]),
                "slides": slides_in_words(per_slide, most=8),
                "n_slides": len(per_slide),
                "label": named.get("label", UNLABELLED),
                "source": named.get("source", "none"),
                "agreement": float(named.get("agreement") or 0.0),
                "human": named.get("label") if named.get("source") == "human" else "",
                "rank": None if rank is None or pd.isna(rank) else int(rank),
                "url": data_url(picture, max_side) if picture is not None else None,
                "network": row["network_type"] if pd.notna(row.get("network_type")) else None,
                "network_share": float(row.get("network_share") or 0.0),
            }
        )
    return sorted(cards, key=lambda c: (c["rank"] is None, c["rank"] or 0, c["cluster_id"]))


def slides_pictured(slide_ids: list[str], checks: dict, most: int | None) -> set[str]:
    """The slides whose pictures the report embeds: all when ``most`` is None or covers
    them, else the first ``most`` of those whose slide check is not ``ok`` (what needs a
    look), then of the rest, in table order."""
    if most is None or len(slide_ids) <= most:
        return set(slide_ids)
    flagged = [s for s in slide_ids if checks.get(s, {}).get("status", "ok") != "ok"]
    is_flagged = set(flagged)
    rest = [s for s in slide_ids if s not in is_flagged]
    return set((flagged + rest)[:most])


def _network_in_vocabulary(cards: list[dict], vocabulary: list[str]) -> list[dict]:
    """The cards with the type network's suggestion in the vocabulary's spelling where it
    is the same word or a close one (its ``others`` → ``other``; ``inflammatory`` stays)."""
    matched, outside = match_vocabulary(
        {k: c["network"] for k, c in enumerate(cards) if c["network"]}, vocabulary
    )
    spelt = {k: outside.get(word) or word for k, word in matched.items()}
    return [card | {"network": spelt[k]} if k in spelt else card for k, card in enumerate(cards)]


def render(context: dict) -> str:
    """The page from a prepared context (see :func:`build_report`)."""
    return _environment().get_template("report.html.j2").render(sections=SECTIONS, **context)


def _filtering_table(tile_quality: pd.DataFrame) -> Markup | None:
    if not len(tile_quality):
        return None
    per_slide = (
        tile_quality.groupby("slide_id").agg(tiles=("tile_id", "size"), kept=("keep", "sum")).reset_index()
    )
    reasons = (
        tile_quality[~tile_quality["keep"]]
        .groupby("slide_id")["reason"]
        .agg(lambda r: ", ".join(sorted(set(r)))[:200])
        .rename("rejected because")
        .reset_index()
    )
    return table_html(per_slide.merge(reasons, on="slide_id", how="left").fillna(""))


SUMMARY_TABLE_COLUMNS = (
    "cluster_id",
    "size",
    "fraction",
    "n_slides",
    "mean_confidence",
    "mean_area_um2",
    "mean_eccentricity",
    "mean_hematoxylin_mean",
    "network_type",
    "network_share",
)


#: How the report names each embedder.
EMBEDDER_NAMES = {
    "morphology": "morphology features",
    "resnet50": "ResNet-50 features",
    "typenet": "type-network features",
}


def clustering_in_words(values: Mapping) -> str:
    """What the clusters were made from, in words, from the clustering parameters (a
    mapping such as ``ClusteringParams.model_dump()``): the embedders and their weights,
    the standardisation, the reduction and the clusterer."""
    embedders = values["embedders"]
    features = " + ".join(f"{EMBEDDER_NAMES.get(k, k)} (weight {w:g})" for k, w in embedders.items())
    within = "within each slide" if values["standardise_within"] == "slide" else "over all cells"
    reduction = values["reduction"]
    reduced = (
        "no reduction"
        if reduction["method"] == "none"
        else f"{reduction['method'].upper()} to {reduction['n_components']} dimensions"
    )
    clusterer = values["clusterer"]
    how = clusterer["method"]
    if how == "kmeans":
        k = clusterer["kmeans"]["n_clusters"]
        per = clusterer["kmeans"]["cells_per_cluster"]
        how = f"k-means ({f'one cluster per {per} cells' if k == 'auto' else f'{k} clusters'})"
    scope = "across slides" if clusterer["scope"] == "global" else "per slide"
    return f"{features}, standardised {within}; {reduced}; {how}, {scope}"


def build_report(
    slides: pd.DataFrame,
    tiles: pd.DataFrame,
    tile_quality: pd.DataFrame,
    cell_stats: pd.DataFrame,
    summary: pd.DataFrame,
    cluster_labels: pd.DataFrame,
    counts: dict,
    pictures: dict[str, Pictures],
    coloured_by: str,
    checks: pd.DataFrame | None = None,
    workbench: Workbench | None = None,
    clustered_on: str = "",
    picture_slides: int | None = None,
) -> str:
    """The report of one run.

    Args:
        slides, tiles, tile_quality: the tiling and filtering tables.
        cell_stats: per slide, its cells, the objects named as not cells, and the cells'
            mean nucleus area and mean hematoxylin
            (:func:`~histocluster.reporting.annotated_cells.slide_cell_stats`).
        summary, cluster_labels: the cluster summary and the cluster-label table.
        counts: cells per label and cluster (``counts.json``).
        pictures: saved PNGs by kind — ``tiling`` and ``overview`` (per slide id),
            ``contact_sheet`` (per slide id), ``segmentation_check``
            (``<slide_id>/<name>``: a tile beside its outlines), ``gallery`` (``cluster_<id>``), ``plot``
            (``cluster_map``, ``cluster_sizes``, ``label_counts``); a value is a picture
            or a callable that loads it.
        coloured_by: what the pictures are coloured by (``label`` or ``cluster``).
        checks: the slide checks (cells per mm², median nucleus area, verdict and fix per
            slide); a slide that is not ``ok`` is shown in red with its fix.
        workbench: the labels file, vocabulary and command the naming workbench shows.
        clustered_on: what the clusters were made from, in words (features, reduction,
            clusterer: :func:`clustering_in_words`).
        picture_slides: the slides whose pictures are embedded (:func:`slides_pictured`);
            None: all. A cohort's report stays small enough to open; the others' pictures
            are on disk and every slide keeps its card.
    """
    workbench = workbench or Workbench()
    ok = slides[slides["status"] == "ok"]
    clusters = summary[~summary["noise"].astype(bool)] if len(summary) else summary
    labelled = (
        cluster_labels[cluster_labels["status"] == "labelled"] if len(cluster_labels) else cluster_labels
    )
    n_cells = int(cell_stats["cells"].sum())
    n_artefacts = int(cell_stats["artefacts"].sum())
    n_objects = n_cells + n_artefacts  # what was segmented and clustered
    run_summary = {
        "slides": f"{len(ok)} read, {len(slides) - len(ok)} not readable",
        "tiles": f"{len(tiles)} on tissue, {int(tile_quality['keep'].sum()) if len(tile_quality) else 0} kept",
        "cells": f"{n_cells:,}"
        + (f" (+{n_artefacts:,} named as not cells, left out)" if n_artefacts else ""),
        "clusters": f"{len(clusters)} ({len(labelled)} named)",
        "coloured by": coloured_by,
    }
    per_slide = cell_stats.set_index("slide_id")
    by_slide = checks.set_index("slide_id").to_dict("index") if checks is not None and len(checks) else {}
    pictured = slides_pictured(ok["slide_id"].tolist(), by_slide, picture_slides)
    slide_cards = []
    for row in slides.itertuples(index=False):
        card = {"slide_id": row.slide_id, "error": None if row.status == "ok" else str(row.error)}
        if row.status == "ok":
            shown = row.slide_id in pictured
            tiling = _picture(pictures.get("tiling", {}), row.slide_id) if shown else None
            overview = _picture(pictures.get("overview", {}), row.slide_id) if shown else None
            card.update(
                width=row.width,
                height=row.height,
                mpp=float((row.mpp_x * row.mpp_y) ** 0.5),
                mpp_source=describe_source(row.mpp_source) if row.mpp_source else None,
                mpp_evidence=getattr(row, "mpp_evidence", None) if row.mpp_source == "estimated" else None,
                check=by_slide.get(row.slide_id),
                cells=int(per_slide["cells"].get(row.slide_id, 0)),
                artefacts=int(per_slide["artefacts"].get(row.slide_id, 0)),
                tiling=data_url(tiling, 560) if tiling else None,
                overview=data_url(overview, 560) if overview else None,
                not_pictured=not shown,
            )
        slide_cards.append(card)
    sheets = [
        {"slide_id": slide_id, "url": data_url(_picture(pictures.get("contact_sheet", {}), slide_id), 1100)}
        for slide_id in ok["slide_id"]
        if slide_id in pictures.get("contact_sheet", {}) and slide_id in pictured
    ]
    checks_drawn = pictures.get("segmentation_check", {})
    segmentation_checks = [
        {
            "slide_id": slide_id,
            "tiles": [
                {"name": key.split("/", 1)[1], "url": data_url(_picture(checks_drawn, key), 1400)}
                for key in sorted(checks_drawn)
                if key.split("/", 1)[0] == slide_id
            ],
        }
        for slide_id in ok["slide_id"]
        if slide_id in pictured
    ]
    segmentation = table_html(cell_stats) if n_objects else None
    plots = pictures.get("plot", {})
    cluster_plots = [
        {"alt": alt, "url": data_url(_picture(plots, key))}
        for key, alt in (("cluster_map", "cluster map"), ("cluster_sizes", "cluster sizes"))
        if n_objects and key in plots
    ]
    cards = cluster_cards(clusters, cluster_labels, pictures.get("gallery", {})) if len(clusters) else []
    keys = cluster_labels["clustering"].dropna().unique() if "clustering" in cluster_labels else []
    states = set(cluster_labels["labels_file"].dropna()) if "labels_file" in cluster_labels else set()
    by_model = any(labels_file_state(state) == FILE_NOT_USED for state in states)
    used = sorted({c["label"] for c in cards} - {UNLABELLED, REVIEW})
    cards = _network_in_vocabulary(cards, workbench.vocabulary)
    network = sorted({c["network"] for c in cards if c["network"]})
    suggestions = list(dict.fromkeys([*workbench.vocabulary, *used, *network]))
    label_plot = _picture(plots, "label_counts")
    label_counts = counts.get("all", {}).get("labels", {})
    colours = label_colours(label_counts)  # as in the pictures and the GeoJSON
    label_rows = [
        {"label": label, "cells": int(n), "rgb": colours[label]} for label, n in label_counts.items()
    ]
    return render(
        {
            "title": "histocluster report",
            "summary": run_summary,
            "slides": slide_cards,
            "filtering": _filtering_table(tile_quality),
            "segmentation_checks": [c for c in segmentation_checks if c["tiles"]],
            "not_pictured": len(ok) - len(pictured),
            "picture_slides": picture_slides,
            "contact_sheets": sheets,
            "segmentation": segmentation,
            "has_cells": bool(n_objects),
            "cluster_plots": cluster_plots,
            "clustered_on": clustered_on,
            "cluster_table": table_html(summary[[c for c in SUMMARY_TABLE_COLUMNS if c in summary.columns]])
            if len(summary)
            else None,
            "n_summary": len(summary),
            "cards": cards,
            "workbench": {
                "labels_file": workbench.labels_file,
                "command": workbench.command,
                "suggestions": suggestions,
                "clustering": str(keys[0]) if len(keys) == 1 else None,
                "file_state": "; ".join(sorted(str(s) for s in states if s != "none")),
                "by_model": by_model,
                "network": bool(network),
                "prenamed": [
                    {
                        "cluster_id": c["cluster_id"],
                        "label": c["label"],
                        "agreement": c["agreement"],
                        "size": c["size"],
                    }
                    for c in sorted(cards, key=lambda c: c["cluster_id"])
                    if c["source"] == "model" and not by_model
                ],
            },
            "label_plot": data_url(label_plot) if label_plot else None,
            "label_rows": label_rows,
            "cluster_labels_table": table_html(_label_table(cluster_labels)),
            "n_cluster_labels": len(cluster_labels),
        }
    )
