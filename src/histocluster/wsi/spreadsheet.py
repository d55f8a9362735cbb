"""Small tables a person writes by hand or saves from a spreadsheet (the slide folder's
``slides.csv``, a cluster-labels CSV): read as CSV whatever the spreadsheet chose."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def read_rows(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header (stripped, lower case) and the non-blank rows with their line numbers.

    Reads what spreadsheets save: UTF-8 with or without a byte-order mark, LF or CRLF,
    ``,``, ``;`` or tab as the separator (sniffed from the header line).
    """
    text = Path(path).read_text(encoding="utf-8-sig")
    try:
        dialect = csv.Sniffer().sniff(text.partition("\n")[0] or ",", delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    header = [name.strip().casefold() for name in next(reader, [])]
    rows = [(line, row) for line, row in enumerate(reader, start=2) if any(cell.strip() for cell in row)]
    return header, rows
