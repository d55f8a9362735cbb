"""Pictures of cells: outlines on a tile, dots on the whole-slide overview, galleries.

Everything works in level-0 pixel coordinates of the slide (as the cell table does);
polygons are parsed once per picture (one vectorised call), not per cell.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from PIL import Image, ImageDraw, ImageFont

from histocluster.labelling.cluster_labels import UNLABELLED
from histocluster.reporting.colours import NOISE_RGB
from histocluster.wsi.tile_grid import tile_scale


@functools.lru_cache(maxsize=16)
def _font(size: int = 12) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib: µ, accents and every label a person types),
    Pillow's own font where it cannot be found."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(str(path), size=size)
    except OSError:
        return ImageFont.load_default(size=size)


def overlay_texts(cluster_ids, labels, confidences) -> pd.Series:
    """The text beside each cell of an overlay: its cluster, its label once it has one, and
    its cluster confidence — ``"14 tumour 0.82"``, or ``"14 0.14"`` while the cell is
    ``unlabelled`` (the word said nothing and made every text longer, so fewer fitted)."""
    return pd.Series(
        [
            f"{c} {confidence:.2f}" if label == UNLABELLED else f"{c} {label} {confidence:.2f}"
            for c, label, confidence in zip(cluster_ids, labels, confidences, strict=True)
        ],
        dtype=object,
    )


def draw_cells(
    image: Image.Image,
    cells: pd.DataFrame,
    to_pixels,
    colours: pd.Series,
    texts: pd.Series | None = None,
    boxes: bool = False,
    max_texts: int = 200,
    noise: pd.Series | None = None,
    width: int = 2,
) -> Image.Image:
    """Outlines of ``cells`` on ``image``, ``width`` px wide; ``to_pixels(x, y)`` maps
    level-0 to image coordinates. Noise cells are dashed-looking (thin, grey) whatever the
    colour; ``texts`` are written for at most ``max_texts`` cells, the most confident first,
    each only where it covers no text already written (so every text can be read)."""
    draw = ImageDraw.Draw(image)
    font = _font(10)
    fills = [tuple(int(v) for v in colour) for colour in colours]
    is_noise = noise.to_numpy(dtype=bool) if noise is not None else np.zeros(len(cells), dtype=bool)
    geometries = shapely.from_wkb(cells["polygon"].to_numpy())
    for k, geometry in enumerate(geometries):
        for part in getattr(geometry, "geoms", [geometry]):
            x, y = shapely.get_coordinates(part.exterior).T
            px, py = to_pixels(x, y)
            draw.line(
                list(zip(px.tolist(), py.tolist(), strict=True)),
                fill=NOISE_RGB if is_noise[k] else fills[k],
                width=1 if is_noise[k] else width,
            )
    corners = ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")
    if boxes or texts is not None:
        x0, y0 = to_pixels(cells["bbox_x0"].to_numpy(float), cells["bbox_y0"].to_numpy(float))
    if boxes:
        x1, y1 = to_pixels(*(cells[c].to_numpy(float) for c in corners[2:]))
        for k in range(len(cells)):
            draw.rectangle([x0[k], y0[k], x1[k], y1[k]], outline=fills[k], width=1)
    if texts is not None:
        order = np.argsort(-cells["cluster_confidence"].to_numpy(), kind="stable")
        labels = texts.to_numpy()
        placed: list[tuple[float, float, float, float]] = []
        for k in order:
            if len(placed) >= max_texts:
                break
            text = str(labels[k])
            left, top, right, bottom = draw.textbbox((x0[k], y0[k] - 11), text, font=font)
            box = (left - 1, top - 1, right + 1, bottom + 1)
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                continue  # it would cover a more confident cell's text: left out, not overlapped
            placed.append(box)
            draw.rectangle(list(box), fill=(255, 255, 255))
            draw.text((x0[k], y0[k] - 11), text, fill=tuple(int(v * 0.6) for v in fills[k]), font=font)
    return image


def tile_overlay(
    rgb: np.ndarray,
    tile: dict,
    cells: pd.DataFrame,
    colours: pd.Series,
    texts,
    boxes,
    max_texts,
    faint: pd.DataFrame | None = None,
    faint_colours: pd.Series | None = None,
) -> Image.Image:
    """One tile (its own pixels, at the tiling resolution) with its cells drawn; ``faint``
    cells (an overlay's less confident ones) 1 px wide in ``faint_colours``, without text
    or box, under the others — shown, so that no nucleus looks missed."""
    sx, sy = tile_scale(tile)

    def to_pixels(x, y):
        return (x - tile["x"]) / sx, (y - tile["y"]) / sy

    image = Image.fromarray(rgb)
    if faint is not None and len(faint):
        draw_cells(image, faint, to_pixels, faint_colours, noise=faint["is_noise"], width=1)
    return draw_cells(image, cells, to_pixels, colours, texts, boxes, max_texts, cells["is_noise"])


#: A slide overview outlines each cell, rather than a dot, when the median nucleus is this
#: many picture pixels across.
OUTLINE_FROM_PX = 6


def slide_overview(
    thumbnail: np.ndarray,
    slide_width: int,
    cells: pd.DataFrame,
    colours: pd.Series,
    legend: dict,
    title: str,
    min_side: int = 800,
) -> Image.Image:
    """The slide's thumbnail with every cell as a dot in its colour, a legend and a title;
    where the picture is fine enough that a nucleus spans ``OUTLINE_FROM_PX`` pixels (a small
    slide), each cell's outline instead. Small thumbnails are enlarged (nearest neighbour) to
    ``min_side`` so cells stay visible."""
    factor = max(1, -(-min_side // max(thumbnail.shape[:2])))
    if factor > 1:
        thumbnail = np.kron(thumbnail, np.ones((factor, factor, 1), dtype=thumbnail.dtype))
    scale = slide_width / thumbnail.shape[1]  # level-0 px per picture px
    image = Image.fromarray(thumbnail).convert("RGB")
    if len(cells) and {"polygon", "bbox_x0", "bbox_x1"} <= set(cells.columns):
        side = float(np.median(cells["bbox_x1"].to_numpy(float) - cells["bbox_x0"].to_numpy(float))) / scale
        if side >= OUTLINE_FROM_PX:
            draw_cells(
                image, cells, lambda x, y: (x / scale, y / scale), colours, width=1 if side < 12 else 2
            )
            return _with_legend(image, legend, title)
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
        # Outlined: a white (not a cell) or pale swatch still shows on the white margin.
        draw.rectangle(
            [image.width + 6, y, image.width + 18, y + 12], fill=tuple(colour), outline=(110, 110, 110)
        )
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


def slides_in_words(per_slide: dict[str, int], most: int = 4) -> str:
    """The cells each slide gives a cluster, most first (ties by name): all of them when
    there are at most ``most`` + 1 slides, else the first ``most`` and how many more slides
    give how many cells — so a cluster of a 200-slide cohort still reads in one line."""
    ranked = sorted(per_slide.items(), key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        return "no slide"
    shown = ranked if len(ranked) <= most + 1 else ranked[:most]
    words = ", ".join(f"{slide} {n:,}" for slide, n in shown)
    rest = ranked[len(shown) :]
    if rest:
        words += f" and {len(rest)} more slides ({sum(n for _, n in rest):,} cells)"
    return words


def gallery_title(summary_row: dict, label_row: dict | None) -> str:
    """Two lines: the cluster's size and the cells each slide gives it, then its label with
    source and agreement."""
    label = label_row.get("label", UNLABELLED) if label_row is not None else UNLABELLED
    line2 = f"{label}"
    if label_row is not None and label_row.get("source") not in (None, "none"):
        line2 += f" ({label_row['source']}, agreement {float(label_row['agreement']):.2f})"
    per_slide = json.loads(summary_row.get("slide_counts") or "{}")
    slides = slides_in_words(per_slide)
    return f"cluster {int(summary_row['cluster_id'])}: {int(summary_row['size']):,} cells ({slides})\n{line2}"


def gallery_crops_of(members: pd.DataFrame, crops) -> list[tuple[str, str, str]]:
    """(kind, key, caption) of a cluster's gallery members whose crops were saved, in the
    gallery's order (typical, random, borderline; by rank); the caption is the cell's slide."""
    from histocluster.clustering.summary import gallery_key

    rows = [
        (r.kind, gallery_key(r.cluster_id, r.kind, r.rank, r.cell_id), r.slide_id)
        for r in members.itertuples()
    ]
    return [row for row in rows if row[1] in crops]


#: Row headings of a gallery, by kind of member.
GALLERY_HEADINGS = {
    "typical": "typical (most confident, spread over slides and tiles)",
    "random": "random members",
    "borderline": "borderline (least confident members)",
}


def scale_bar(crop: Image.Image, crop_um: float, bar_um: float = 10.0) -> Image.Image:
    """``crop`` with a ``bar_um`` µm bar in its lower left corner (white on a dark edge)."""
    out = crop.convert("RGB")
    draw = ImageDraw.Draw(out)
    length = max(2, round(out.width * bar_um / crop_um))
    x0, y1 = 4, out.height - 5
    draw.rectangle((x0 - 1, y1 - 4, x0 + length + 1, y1 + 1), fill=(0, 0, 0))
    draw.rectangle((x0, y1 - 3, x0 + length, y1), fill=(255, 255, 255))
    return out


def cluster_gallery(
    crops: list[tuple[str, Image.Image, str]],
    summary_row: dict,
    label_row: dict | None,
    size: int,
    columns: int,
    crop_um: float,
) -> Image.Image:
    """A cluster's gallery: a row (or more) per kind of member — typical, random, borderline
    — each crop (``kind``, picture, caption) shown at ``size`` px with a 10 µm scale bar and
    its slide below, under :func:`gallery_title` (the cells per slide)."""
    pad, caption_h, heading_h, title_h = 6, 14, 18, 40
    kinds = [k for k in GALLERY_HEADINGS if any(kind == k for kind, _, _ in crops)]
    rows_of = {k: max(1, -(-sum(1 for kind, _, _ in crops if kind == k) // columns)) for k in kinds}
    height = title_h + sum(heading_h + r * (size + caption_h + pad) for r in rows_of.values()) + pad
    canvas = Image.new("RGB", (columns * (size + pad) + pad, max(height, title_h + 40)), "white")
    draw = ImageDraw.Draw(canvas)
    lines = gallery_title(summary_row, label_row).split("\n")[:2]
    lines[0] += "   (scale bars: 10 µm)"
    for k, line in enumerate(lines):
        draw.text((pad, 4 + 16 * k), line, fill=(0, 0, 0), font=_font(13))
    if not crops:
        draw.text((pad, title_h + 10), "no cells to show", fill=(120, 0, 0), font=_font(12))
    y = title_h
    for kind in kinds:
        draw.text((pad, y + 2), GALLERY_HEADINGS[kind], fill=(90, 40, 0), font=_font(12))
        y += heading_h
        mine = [(picture, caption) for k, picture, caption in crops if k == kind]
        for i, (picture, caption) in enumerate(mine):
            r, c = divmod(i, columns)
            x, top = pad + c * (size + pad), y + r * (size + caption_h + pad)
            shown = picture.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            canvas.paste(scale_bar(shown, crop_um), (x, top))
            draw.text((x, top + size + 1), caption[: size // 6], fill=(60, 60, 60), font=_font(10))
        y += rows_of[kind] * (size + caption_h + pad)
    return canvas


def counts_figure(counts: dict) -> Image.Image:
    """Bar chart of cells per label (over all slides), each bar in its label's colour."""
    from histocluster.clustering.plots import figure_image, pyplot
    from histocluster.reporting.colours import label_colours

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(8, 4), dpi=120)
    labels = counts["all"]["labels"]
    if labels:
        colours = label_colours(labels)  # as in every other picture of the run
        ax.bar(
            list(labels),
            list(labels.values()),
            color=[np.array(colours[k]) / 255 for k in labels],
            edgecolor="0.4",  # a white (not a cell) or pale bar still shows
            linewidth=0.6,
        )
        ax.tick_params(axis="x", labelrotation=45)
    else:
        ax.text(0.5, 0.5, "no cells", ha="center", va="center")
    ax.set_ylabel("cells")
    ax.set_title(f"Cells per label ({counts['all']['cells']:,} cells)")
    figure.tight_layout()
    return figure_image(figure)


#: Outline colour of the segmentation check: visible on haematoxylin and eosin alike.
CHECK_RGB = (0, 230, 0)


def check_tiles(tiles: pd.DataFrame, quality: pd.DataFrame, cells: pd.DataFrame, n: int) -> pd.DataFrame:
    """Up to ``n`` kept tiles per slide for the segmentation check, with why each was
    chosen: the one with the most cells (``densest``), the one with the most dark pixels
    (``darkest``), then tiles spread over the slide (``spread``: farthest from those
    already chosen). Columns: slide_id, tile_id, why, cells."""
    kept = quality.loc[quality["keep"].astype(bool), ["tile_id", "dark_ratio"]] if len(quality) else None
    if kept is None or not len(kept) or n == 0:
        return pd.DataFrame(columns=["slide_id", "tile_id", "why", "cells"])
    counts = cells.groupby("tile_id").size() if len(cells) else pd.Series(dtype=int)
    table = tiles.merge(kept, on="tile_id")
    table["cells"] = table["tile_id"].map(counts).fillna(0).astype(int)
    rows = []
    for slide_id, mine in table.groupby("slide_id", sort=True):
        chosen: list[tuple[str, str]] = []
        for why, column in (("densest", "cells"), ("darkest", "dark_ratio")):
            for tile_id in mine.sort_values([column, "tile_id"], ascending=[False, True])["tile_id"]:
                if tile_id not in {t for t, _ in chosen}:
                    chosen.append((tile_id, why))
                    break
        centres = mine.assign(cx=mine["x"] + mine["w"] / 2, cy=mine["y"] + mine["h"] / 2).set_index("tile_id")
        while len(chosen) < min(n, len(mine)):
            picked = centres.loc[[t for t, _ in chosen], ["cx", "cy"]].to_numpy()
            rest = centres.drop(index=[t for t, _ in chosen])
            distance = np.min(
                np.hypot(
                    rest["cx"].to_numpy()[:, None] - picked[:, 0],
                    rest["cy"].to_numpy()[:, None] - picked[:, 1],
                ),
                axis=1,
            )
            chosen.append((rest.index[int(np.argmax(distance))], "spread"))
        for tile_id, why in chosen[:n]:
            rows.append(
                {"slide_id": slide_id, "tile_id": tile_id, "why": why, "cells": int(counts.get(tile_id, 0))}
            )
    return pd.DataFrame(rows, columns=["slide_id", "tile_id", "why", "cells"])


def cells_touching(cells: pd.DataFrame, tile: dict) -> pd.DataFrame:
    """The cells whose bounding box meets ``tile``'s level-0 box, whichever tile owns them
    (a cell owned by a neighbour still shows in this tile's overlap)."""
    return cells[
        (cells["bbox_x1"] >= tile["x"])
        & (cells["bbox_x0"] <= tile["x"] + tile["w"])
        & (cells["bbox_y1"] >= tile["y"])
        & (cells["bbox_y0"] <= tile["y"] + tile["h"])
    ]


def segmentation_check(
    rgb: np.ndarray, tile: dict, cells: pd.DataFrame, title: str, zoom: int = 2
) -> Image.Image:
    """The raw tile and the same tile with *every* cell's outline, side by side, each
    tile pixel drawn ``zoom`` × ``zoom`` so a nucleus without an outline is plain to see."""
    height, width = rgb.shape[:2]
    raw = Image.fromarray(rgb).resize((width * zoom, height * zoom), Image.Resampling.NEAREST)
    sx, sy = tile_scale(tile)
    drawn = draw_cells(
        raw.copy(),
        cells,
        lambda x, y: ((x - tile["x"]) / sx * zoom, (y - tile["y"]) / sy * zoom),
        pd.Series([CHECK_RGB] * len(cells), dtype=object),
        width=max(1, zoom),
    )
    gap, header = 8, 22
    sheet = Image.new("RGB", (2 * raw.width + gap, raw.height + header), "white")
    sheet.paste(raw, (0, header))
    sheet.paste(drawn, (raw.width + gap, header))
    ImageDraw.Draw(sheet).text((4, 4), title, fill=(0, 0, 0), font=_font(14))
    return sheet
