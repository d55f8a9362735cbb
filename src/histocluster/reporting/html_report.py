"""The run's HTML report: one self-contained page (pictures embedded), no server needed.

Sections: slides (thumbnail with tissue outline and tiles, cells as dots), tile filter,
segmentation, clusters (map, sizes), one gallery per cluster with its label, source and
agreement, and counts per label. A stage that has nothing to show says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable

import pandas as pd
from PIL import Image

SECTIONS = ["slides", "filtering", "segmentation", "clusters", "galleries", "labels"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em;color:#222}
h1{margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #ddd;padding:.5em;border-radius:4px}
.card img{max-width:100%;vertical-align:top}.empty{color:#a00}.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em}
nav a{margin-right:1em}
"""


def image_tag(image: Image.Image, alt: str, max_side: int = 900, quality: int = 82) -> str:
    """An <img> with the picture embedded as a JPEG data URL (shrunk to ``max_side``)."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{data}">'


def table_html(frame: pd.DataFrame, max_rows: int = 200) -> str:
    if frame.empty:
        return '<p class="empty">nothing to show</p>'
    return frame.head(max_rows).to_html(index=False, border=0, float_format=lambda v: f"{v:.3g}", escape=True)


def details(summary: str, body: str) -> str:
    """A collapsed block (long tables stay out of the way of the pictures)."""
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def empty(message: str) -> str:
    return f'<p class="empty">{html.escape(message)}</p>'


def build(
    title: str,
    summary: dict,
    sections: dict[str, str | Iterable[str]],
) -> str:
    """The page: a title, a one-line summary per stage and the sections (HTML
    fragments or iterables of fragments, consumed as the page is built)."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<nav>" + "".join(f"<a href='#{name}'>{name}</a>" for name in SECTIONS) + "</nav>",
        "<table>"
        + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items()
        )
        + "</table>",
    ]
    for name in SECTIONS:
        parts.append(f"<section id='{name}'><h2>{name.capitalize()}</h2>")
        body = sections.get(name, empty("not run"))
        parts.extend([body] if isinstance(body, str) else body)
        parts.append("</section>")
    parts.append(f"<script type='application/json' id='summary'>{html.escape(json.dumps(summary))}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)
