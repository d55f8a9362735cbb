"""What a pathologist looks at: the annotated cell table, colours, overlays, galleries,
the whole-slide overview, the viewer JSON and counts.

Everything works in level-0 pixel coordinates of the slide (as the cell table does) and
is drawn lazily, one picture at a time.
"""

from __future__ import annotations

import colorsys
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw, ImageFont

from histocluster.clustering.clusterers import NOISE
from histocluster.clustering.plots import cluster_colours
from histocluster.labelling.labels import REVIEW, UNLABELLED

NOISE_RGB = (150, 150, 150)
UNSURE_RGB = {UNLABELLED: (128, 128, 128), REVIEW: (255, 170, 0)}


def _font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def label_colour(label: str) -> tuple[int, int, int]:
    """A stable, distinct-enough colour for a label name (same name, same colour, in
    every picture, the GeoJSON and the report); grey for unlabelled, orange for review."""
    if label in UNSURE_RGB:
        return UNSURE_RGB[label]
    hue = int(hashlib.sha256(label.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def annotated_cells(
    cells: pd.DataFrame, clusters: pd.DataFrame, cell_labels: pd.DataFrame | None
) -> pd.DataFrame:
    """The cell table with ``cluster_id``, ``cluster_confidence``, ``is_noise``, ``label``,
    ``label_source``, ``label_confidence`` (cells not clustered: cluster -1, noise; not
    labelled: ``unlabelled``)."""
    table = cells.merge(
        clusters[["cell_id", "cluster_id", "is_noise", "confidence", "map_x", "map_y"]].rename(
            columns={"confidence": "cluster_confidence"}
        ),
        on="cell_id",
        how="left",
    )
    table["cluster_id"] = table["cluster_id"].fillna(NOISE).astype("int64")
    table["is_noise"] = table["is_noise"].astype("boolean").fillna(True).astype(bool)
    table["cluster_confidence"] = table["cluster_confidence"].fillna(0.0)
    if cell_labels is not None and len(cell_labels):
        labels = cell_labels[["cell_id", "label", "source", "confidence"]].rename(
            columns={"source": "label_source", "confidence": "label_confidence"}
        )
        table = table.merge(labels, on="cell_id", how="left")
    else:
        table = table.assign(label=np.nan, label_source=np.nan, label_confidence=np.nan)
    table["label"] = table["label"].astype(object).fillna(UNLABELLED)
    table["label_source"] = table["label_source"].astype(object).fillna("none")
    table["label_confidence"] = table["label_confidence"].fillna(0.0)
    return table


def colour_table(table: pd.DataFrame, colour_by: str) -> tuple[pd.Series, pd.Series, dict]:
    """Per cell: its class name and RGB colour when coloured by ``label`` or ``cluster``,
    and the legend (name → RGB)."""
    if colour_by == "label":
        names = table["label"].astype(str)
        legend = {name: label_colour(name) for name in sorted(names.unique())}
    else:
        hexes = cluster_colours(table["cluster_id"].to_numpy())
        names = table["cluster_id"].map(lambda c: "noise" if c == NOISE else f"cluster {c}")
        legend = {
            ("noise" if c == NOISE else f"cluster {c}"): (NOISE_RGB if c == NOISE else hex_to_rgb(h))
            for c, h in sorted(hexes.items())
            if (table["cluster_id"] == c).any()
        }
    return names, names.map(legend), legend


def draw_cells(
    image: Image.Image,
    cells: pd.DataFrame,
    to_pixels,
    colours: pd.Series,
    texts: pd.Series | None = None,
    boxes: bool = False,
    max_texts: int = 200,
    noise: pd.Series | None = None,
) -> Image.Image:
    """Outlines of ``cells`` on ``image``; ``to_pixels(x, y)`` maps level-0 to image
    coordinates. Noise cells are dashed-looking (thin, grey) whatever the colour;
    ``texts`` are written for at most ``max_texts`` cells (the most confident first)."""
    draw = ImageDraw.Draw(image)
    font = _font(10)
    for k, row in enumerate(cells.itertuples(index=False)):
        geometry = shapely.from_wkb(row.polygon)
        colour = tuple(colours.iloc[k])
        is_noise = bool(noise.iloc[k]) if noise is not None else False
        for part in getattr(geometry, "geoms", [geometry]):
            x, y = np.asarray(part.exterior.coords).T
            px, py = to_pixels(x, y)
            draw.line(
                list(zip(px, py, strict=True)),
                fill=NOISE_RGB if is_noise else colour,
                width=1 if is_noise else 2,
            )
        if boxes:
            x0, y0 = to_pixels(np.array([row.bbox_x0]), np.array([row.bbox_y0]))
            x1, y1 = to_pixels(np.array([row.bbox_x1]), np.array([row.bbox_y1]))
            draw.rectangle([x0[0], y0[0], x1[0], y1[0]], outline=colour, width=1)
    if texts is not None:
        order = np.argsort(-cells["cluster_confidence"].to_numpy())[:max_texts]
        for k in order:
            row = cells.iloc[k]
            x, y = to_pixels(np.array([row["bbox_x0"]]), np.array([row["bbox_y0"]]))
            text = str(texts.iloc[k])
            left, top, right, bottom = draw.textbbox((x[0], y[0] - 11), text, font=font)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(255, 255, 255))
            draw.text((x[0], y[0] - 11), text, fill=tuple(int(v * 0.6) for v in colours.iloc[k]), font=font)
    return image


def tile_overlay(
    rgb: np.ndarray, tile: dict, cells: pd.DataFrame, colours: pd.Series, texts, boxes, max_texts
) -> Image.Image:
    """One tile (its own pixels, at the tiling resolution) with its cells drawn."""
    sx, sy = tile["w"] / tile["out_w"], tile["h"] / tile["out_h"]
    image = Image.fromarray(rgb)
    return draw_cells(
        image,
        cells,
        lambda x, y: ((x - tile["x"]) / sx, (y - tile["y"]) / sy),
        colours,
        texts,
        boxes,
        max_texts,
        cells["is_noise"],
    )


def slide_overview(
    thumbnail: np.ndarray, scale: float, cells: pd.DataFrame, colours: pd.Series, legend: dict, title: str
) -> Image.Image:
    """The thumbnail with every cell as a dot in its colour (``scale``: level-0 px per
    thumbnail px), a legend and a title."""
    image = Image.fromarray(thumbnail).convert("RGB")
    draw = ImageDraw.Draw(image)
    radius = max(1, round(min(image.size) / 800))
    xs = cells["centroid_x"].to_numpy() / scale
    ys = cells["centroid_y"].to_numpy() / scale
    for x, y, colour in zip(xs, ys, colours, strict=True):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=tuple(colour))
    return _with_legend(image, legend, title)


def _with_legend(image: Image.Image, legend: dict, title: str, max_items: int = 40) -> Image.Image:
    font = _font(12)
    items = list(legend.items())[:max_items]
    width = 190
    canvas = Image.new("RGB", (image.width + width, max(image.height + 20, 20 + 16 * len(items))), "white")
    canvas.paste(image, (0, 20))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill=(0, 0, 0), font=font)
    for k, (name, colour) in enumerate(items):
        y = 24 + 16 * k
        draw.rectangle([image.width + 6, y, image.width + 18, y + 12], fill=tuple(colour))
        draw.text((image.width + 24, y), str(name)[:26], fill=(0, 0, 0), font=font)
    if len(legend) > max_items:
        draw.text(
            (image.width + 6, 24 + 16 * max_items),
            f"… {len(legend) - max_items} more",
            fill=(0, 0, 0),
            font=font,
        )
    return canvas


def gallery(crops: list[np.ndarray], captions: list[str], title: str, columns: int = 5) -> Image.Image:
    """A grid of crops with a caption under each and a title on top."""
    size = crops[0].shape[0] if crops else 128
    rows = max(1, -(-len(crops) // columns))
    pad, caption_h, title_h = 6, 14, 40
    canvas = Image.new(
        "RGB", (columns * (size + pad) + pad, title_h + rows * (size + caption_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(title.split("\n")[:2]):
        draw.text((pad, 4 + 16 * k), line, fill=(0, 0, 0), font=_font(13))
    if not crops:
        draw.text((pad, title_h + 10), "no representative cells", fill=(120, 0, 0), font=_font(12))
    for k, (crop, caption) in enumerate(zip(crops, captions, strict=True)):
        r, c = divmod(k, columns)
        x, y = pad + c * (size + pad), title_h + r * (size + caption_h + pad)
        canvas.paste(Image.fromarray(crop), (x, y))
        draw.text((x, y + size + 1), caption[: size // 6], fill=(60, 60, 60), font=_font(10))
    return canvas


def _outline(wkb: bytes) -> list[list[float]]:
    """The exterior ring (of the largest part) as [[x, y], ...], 2 decimals."""
    geometry = shapely.from_wkb(wkb)
    if geometry.geom_type != "Polygon":
        geometry = max(geometry.geoms, key=lambda g: g.area)
    return [[round(x, 2), round(y, 2)] for x, y in geometry.exterior.coords]


@dataclass
class StreamedJSON:
    """A JSON object written piece by piece: ``header``'s keys, then ``list_key`` holding
    ``items`` one at a time (see :class:`histocluster.datasets.StreamedJSONDataset`)."""

    header: dict
    list_key: str
    items: Iterable[dict]

    def as_dict(self) -> dict:
        return {**self.header, self.list_key: list(self.items)}


def _viewer_tiles(tiles: pd.DataFrame, table: pd.DataFrame) -> Iterator[dict]:
    for tile_id, cells in table.groupby("tile_id", sort=True):
        tile = tiles.loc[tile_id]
        yield {
            "tile_id": tile_id,
            "x": int(tile["x"]),
            "y": int(tile["y"]),
            "w": int(tile["w"]),
            "h": int(tile["h"]),
            "cells": [
                {
                    "cell_id": row.cell_id,
                    "polygon": _outline(row.polygon),
                    "centroid": [round(row.centroid_x, 2), round(row.centroid_y, 2)],
                    "bbox": [row.bbox_x0, row.bbox_y0, row.bbox_x1, row.bbox_y1],
                    "pred_class": row.label,
                    "cluster_id": int(row.cluster_id),
                    "cluster_confidence": round(float(row.cluster_confidence), 4),
                    "label_confidence": round(float(row.label_confidence), 4),
                }
                for row in cells.itertuples(index=False)
            ],
        }


def viewer_json(slide: pd.Series, tiles: pd.DataFrame, table: pd.DataFrame) -> StreamedJSON:
    """Upstream's post-processing shape (tiles with their cells: polygon, pred_class,
    cluster_id, cluster_confidence, bbox), in level-0 pixels with the slide's µm/px;
    tiles are produced one at a time as the file is written."""
    header = {
        "slide_id": slide.name,
        "path": str(slide["path"]),
        "width": int(slide["width"]),
        "height": int(slide["height"]),
        "mpp_x": float(slide["mpp_x"]),
        "mpp_y": float(slide["mpp_y"]),
        "coordinates": "level-0 pixels of the slide",
    }
    return StreamedJSON(header, "tiles", _viewer_tiles(tiles, table))


def counts(table: pd.DataFrame) -> dict:
    """Cells per label and per cluster, per slide and over all slides."""

    def block(frame: pd.DataFrame) -> dict:
        return {
            "cells": int(len(frame)),
            "labels": {str(k): int(v) for k, v in frame["label"].value_counts().items()},
            "clusters": {str(k): int(v) for k, v in frame["cluster_id"].value_counts().sort_index().items()},
        }

    return {"all": block(table), "slides": {str(s): block(f) for s, f in table.groupby("slide_id")}}
