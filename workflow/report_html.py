"""HTML building blocks of the report: the page shell and its style, tables, number formatting.

Every page is plain HTML with inline CSS and (where it has any) inline JavaScript:
nothing is fetched from the network, and pages work from ``file://``.
"""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

STYLE = """
body{font-family:system-ui,sans-serif;max-width:72rem;margin:1.5rem auto;padding:0 1rem;color:#222;line-height:1.4}
table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}td.l,th.l{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.88rem}nav.toc a{margin-right:.8rem}h2{margin-top:2rem;border-bottom:1px solid #ddd}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem}
.card b{display:block;font-size:1.3rem}.tok{border-radius:3px;padding:0 1px;white-space:pre}
.pill{display:inline-block;border-radius:9px;padding:0 .45rem;font-size:.8rem;background:#eee}
.retained{background:#c9e7c9}.drifted{background:#fde9b6}.overwritten{background:#f7c6c6}.new{background:#c8dcf7}
.dead{background:#ddd}.figs{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-start}.figs img{max-width:49%}
details{margin:.4rem 0}img.thumb{width:14rem}summary{cursor:pointer}
"""


def fmt(x, digits: int = 3) -> str:
    """A table cell: floats to `digits` decimals, missing values as n/a, the rest escaped."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


class Raw(str):
    """Cell content that is already HTML (a link), written as is."""


def cell(value, digits: int = 3) -> str:
    return value if isinstance(value, Raw) else fmt(value, digits)


def table(header: list[str], rows: list[list], cls: str = "", digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{' class=l' if isinstance(v, str) else ''}>{cell(v, digits)}</td>" for v in row)
                   + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def link(href: str, text, title: str | None = None) -> Raw:
    tip = f' title="{html.escape(title)}"' if title else ""
    return Raw(f'<a href="{html.escape(href)}"{tip}>{html.escape(str(text))}</a>')


def rel(target: str | Path, start_dir: str | Path) -> str:
    """`target` relative to the folder `start_dir` (links that work wherever the report folder is copied with results/)."""
    return os.path.relpath(target, start_dir)


def page(title: str, body: str, script: str = "", data: dict | None = None) -> str:
    """A whole HTML document; `data` is embedded as JSON in <script id="data"> for the page's script."""
    embedded = ""
    if data is not None:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
        embedded = f'<script id="data" type="application/json">{text}</script>'
    js = f"<script>{script}</script>" if script else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}{embedded}{js}</body></html>\n")


def finite(x):
    """JSON-safe number: NaN and infinities become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
