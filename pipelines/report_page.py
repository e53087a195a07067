"""A self-contained HTML page of figures and tables: images are embedded, every text escaped."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from preprocess import atomic

STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "section{border-top:1px solid #ccc;padding:.6em 0}img{max-width:100%}"
    "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px}"
    "code{background:#f4f4f4}"
)


@dataclass
class Section:
    """One step of the network: a title, a note, an optional figure and an optional table."""

    title: str
    note: str = ""
    image: Path | None = None
    table: list[dict[str, object]] = field(default_factory=list)


def _table(rows: list[dict[str, object]]) -> str:
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: Path, title: str, summary: str, sections: list[Section]) -> Path:
    """Write `path`: the figures as data: URIs (the page needs no other file), then the tables."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>",
    ]
    for number, section in enumerate(sections, start=1):
        parts.append(f"<section><h2>{number}. {html.escape(section.title)}</h2>")
        if section.note:
            parts.append(f"<p>{html.escape(section.note)}</p>")
        if section.image is not None:
            data = base64.b64encode(section.image.read_bytes()).decode("ascii")
            # The text alternative says what the figure shows; the file name is printed below it.
            alt = html.escape(section.title, quote=True)
            name = html.escape(section.image.name)
            parts.append(f"<p><img alt='{alt}' src='data:image/png;base64,{data}'><br><code>{name}</code></p>")
        if section.table:
            parts.append(_table(section.table))
        parts.append("</section>")
    parts.append("</body></html>\n")
    atomic.write_text(path, "".join(parts))
    return path
