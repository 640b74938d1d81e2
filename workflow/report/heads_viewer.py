"""The data of the interactive attention-pattern page (stage `heads_summary`'s ``patterns.html``, which
the report copies as ``heads.html``): the page is ``templates/heads.html.j2`` with ``static/heads.js``
and ``static/heads.css`` inlined, and everything it shows is embedded as JSON, so it works from
``file://`` with nothing fetched.

Per example document: its id, label and tokens, and each variant's attention (layers, heads, T, T),
rows are queries, as base64 of one byte per weight (`encode`; heads.js reads weight = byte / 255).
Per head (key ``"layer:head"``, layers 1-based): its row of changes.parquet, floats to 4 decimals.
"""

from __future__ import annotations

import base64

import numpy as np
import polars as pl

from workflow.layout import VARIANTS
from workflow.report.render import render


def encode(pattern: np.ndarray) -> str:
    """Attention (layers, heads, T, T) as base64 of uint8 = round(255 * weight)."""
    return base64.b64encode(
        np.clip(np.rint(pattern.astype(np.float32) * 255), 0, 255).astype(np.uint8).tobytes()
    ).decode()


def viewer(meta: list[dict], patterns: dict[str, dict], change: pl.DataFrame, n_examples: int, title: str) -> str:
    """patterns.html: the first `n_examples` documents of `meta` (patterns.json entries) with each
    variant's patterns (`patterns`: variant -> ``doc<id>`` -> array), and the head grid of `change`
    (changes.parquet)."""
    n_layers, n_heads = int(change["layer"].max()), int(change["head"].max()) + 1
    examples = []
    for doc in meta[:n_examples]:
        examples.append(
            {
                "doc_id": doc["doc_id"],
                "label": doc["label"],
                "tokens": doc["tokens"],
                **{v: encode(patterns[v][f"doc{doc['doc_id']}"]) for v in VARIANTS},
            }
        )
    info = {
        f"{row['layer']}:{row['head']}": {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
        for row in change.iter_rows(named=True)
    }  # NaN becomes null in the page (script_json)
    data = {
        "title": title,
        "layers": n_layers,
        "heads": n_heads,
        "variants": list(VARIANTS),
        "examples": examples,
        "info": info,
    }
    return render("heads.html.j2", title=f"Attention patterns: {title}", heading=title, data=data)
