"""Pictures for people: slide overviews with tissue and tile grid, tile contact sheets."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

KEPT = (0, 160, 60)
REJECTED = (210, 30, 30)
TISSUE = (0, 110, 255)
DIMMED_BACKGROUND = 0.55


def _font(size: int = 12) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def tiling_overview(
    thumbnail: np.ndarray,
    mask: np.ndarray,
    tiles: pd.DataFrame,
    scale: tuple[float, float],
    title: str = "",
    min_side: int = 800,
) -> Image.Image:
    """The thumbnail with background dimmed, the tissue outline in blue and each tile's
    footprint drawn (kept tiles green). ``scale`` is level-0 pixels per thumbnail pixel.
    When the tile table has a ``keep`` column, rejected tiles are drawn in red. Small
    thumbnails are enlarged (nearest neighbour) to ``min_side`` so the grid stays legible; a
    ``mask`` of another size than the thumbnail is resized to it (nearest neighbour)."""
    from skimage.segmentation import find_boundaries

    if mask.shape != thumbnail.shape[:2]:  # a finer picture than the mask: the mask follows it
        size = (thumbnail.shape[1], thumbnail.shape[0])
        mask = (
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST))
            > 0
        )
    factor = max(1, -(-min_side // max(thumbnail.shape[:2])))
    if factor > 1:
        thumbnail = np.kron(thumbnail, np.ones((factor, factor, 1), dtype=thumbnail.dtype))
        mask = np.kron(mask, np.ones((factor, factor), dtype=bool))
        scale = (scale[0] / factor, scale[1] / factor)
    rgb = thumbnail.astype(np.float32)
    rgb[~mask] = rgb[~mask] * DIMMED_BACKGROUND + 255 * (1 - DIMMED_BACKGROUND)
    rgb = rgb.astype(np.uint8)
    rgb[find_boundaries(mask, mode="inner")] = TISSUE
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    sx, sy = scale
    for tile in tiles.itertuples(index=False):
        keep = bool(getattr(tile, "keep", True))
        color = KEPT if keep else REJECTED
        x0, y0 = tile.x / sx, tile.y / sy
        draw.rectangle([x0, y0, x0 + tile.w / sx - 1, y0 + tile.h / sy - 1], outline=color, width=1)
    if title:
        banner = Image.new("RGB", (image.width, 18), "white")
        ImageDraw.Draw(banner).text((4, 2), title, fill=(0, 0, 0), font=_font())
        canvas = Image.new("RGB", (image.width, image.height + banner.height), "white")
        canvas.paste(banner, (0, 0))
        canvas.paste(image, (0, banner.height))
        return canvas
    return image


def contact_sheet(
    sections: list[tuple[str, list[tuple[np.ndarray, str, bool]]]],
    thumb_size: int = 160,
    columns: int = 6,
) -> Image.Image:
    """A sheet of tile thumbnails in titled sections.

    ``sections`` holds ``(title, items)`` with items ``(rgb tile, caption, kept)``; each
    thumbnail gets a green (kept) or red (rejected) frame and its caption below.
    """
    pad, caption_h, title_h = 6, 28, 22
    cell_w, cell_h = thumb_size + pad, thumb_size + caption_h + pad
    width = columns * cell_w + pad
    height = pad
    for _, items in sections:
        rows = max(1, -(-len(items) // columns))
        height += title_h + rows * cell_h
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(11)
    y = pad
    for title, items in sections:
        draw.text((pad, y + 4), title, fill=(0, 0, 0), font=_font(14))
        y += title_h
        if not items:
            draw.text((pad, y + 4), "(none)", fill=(120, 120, 120), font=font)
        for index, (rgb, caption, kept) in enumerate(items):
            cx = pad + (index % columns) * cell_w
            cy = y + (index // columns) * cell_h
            thumb = Image.fromarray(rgb).resize((thumb_size, thumb_size), Image.Resampling.BILINEAR)
            sheet.paste(thumb, (cx, cy))
            draw.rectangle(
                [cx, cy, cx + thumb_size - 1, cy + thumb_size - 1],
                outline=KEPT if kept else REJECTED,
                width=3,
            )
            for line_no, line in enumerate(_wrap(caption, thumb_size, font, draw)[:2]):
                draw.text((cx, cy + thumb_size + 1 + 12 * line_no), line, fill=(0, 0, 0), font=font)
        y += max(1, -(-len(items) // columns)) * cell_h
    return sheet


def _wrap(text: str, width: int, font: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines
