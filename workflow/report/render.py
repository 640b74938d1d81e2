"""Rendering the report's pages: the jinja environment, the static files inlined into every page,
number formatting, and the cell types that tables are built from.

Autoescape is on: section builders hand templates plain values and the cell types below
(`Link`, `Pill`, ...), never HTML strings, and the templates escape every one of them. The only
`Markup` (text written as is) is what is already the page's own code: the static scripts and
styles, and JSON for a ``<script>`` element, where HTML escaping would corrupt them (the
browser does not decode entities inside ``<script>`` or ``<style>``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from workflow.store.files import json_safe

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass(frozen=True)
class Link:
    href: str
    text: str
    title: str | None = None


@dataclass(frozen=True)
class Pill:
    """A feature category (retained, drifted, ...) shown as a coloured label; `kind` is also its CSS class."""

    kind: str


@dataclass(frozen=True)
class Note:
    """Small grey text inside a cell."""

    text: str


@dataclass(frozen=True)
class Thumb:
    """A small image that links somewhere (the study index's similarity plots)."""

    href: str
    src: str
    alt: str


@dataclass(frozen=True)
class Parts:
    """A cell of several values (links, text, notes) joined by `sep`."""

    parts: tuple
    sep: str = " "


@dataclass(frozen=True)
class Image:
    """A plot copied into the report folder: `src` relative to the page."""

    src: str
    alt: str


@dataclass
class Table:
    """A table: `cls` is its CSS class (tests and scripts find tables by it); floats get `digits` decimals."""

    header: list[str]
    rows: list[list] = field(default_factory=list)
    cls: str = ""
    digits: int = 3


CELL_TYPES = (Link, Pill, Note, Thumb, Parts)


def number(x, digits: int = 3) -> str:
    """A value as text: floats to `digits` decimals, missing values (None, NaN) as n/a, bools yes/no."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def script_json(obj) -> str:
    """`obj` as JSON to embed in a ``<script>`` element: NaN-free, and with every ``<`` written as the
    JSON escape ``\\u003c``, so neither ``</script>`` nor ``<!--`` in a value can end the element
    (JSON.parse reads the escape back as ``<``)."""
    return json.dumps(json_safe(obj), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def rel(target: str | Path, start_dir: str | Path) -> str:
    """`target` relative to the folder `start_dir` (links that work wherever the report folder is
    copied with results/)."""
    return os.path.relpath(target, start_dir)


@functools.cache
def inline(name: str) -> Markup:
    """A static file's text, to be written into a page as is (Markup: it is our own script or style)."""
    text = (STATIC / name).read_text(encoding="utf-8")
    for end in ("</script", "</style"):
        if end in text.lower():
            raise ValueError(f"{STATIC / name} contains {end!r}, which would end or break the element it is inlined in")
    return Markup(text)


def _embed(obj) -> Markup:
    # Markup: script_json already made the text safe for a <script> element, where entities stay literal.
    return Markup(script_json(obj))


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt name fails the build instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=number, script_json=_embed)
    env.globals.update(inline=inline)
    env.tests.update(
        link=lambda v: isinstance(v, Link),
        pill=lambda v: isinstance(v, Pill),
        note=lambda v: isinstance(v, Note),
        thumb=lambda v: isinstance(v, Thumb),
        parts=lambda v: isinstance(v, Parts),
        left=lambda v: isinstance(v, (str, *CELL_TYPES)),  # text is left-aligned, numbers right
    )
    return env


def render(template: str, **context) -> str:
    """Render `template` (a file in templates/) with `context`."""
    return environment().get_template(template).render(**context)
