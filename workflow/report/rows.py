"""Rows and cells that several tables share: the SAE quality row (the report page and the README),
links to feature pages and attention heads, and the pivot of a per-(site, layer, variant) table."""

from __future__ import annotations

import polars as pl

from workflow import layout
from workflow.layout import VARIANTS
from workflow.report.render import Link, Table

VARIANT_ORDER = {v: i for i, v in enumerate(VARIANTS)}
SAE_COLUMNS = ["recipe", "architecture", "site", "layer", "variant", "d_sae", "FVU", "L0", "dead", "dense", "cosine",
               "task loss recovered", "accuracy clean / spliced", "KL", "LM loss recovered"]  # fmt: skip
FEATURE_PAGE = layout.REPORT.names["features"]
HEADS_PAGE = layout.REPORT.names["heads"]


def feature_link(key: str | None, feature, text: str | None = None):
    """A link to a feature's page; the bare id where its SAE is not in the report, n/a for no feature (-1)."""
    if feature is None or feature < 0:
        return "n/a"
    if key is None:
        return feature
    return Link(f"{FEATURE_PAGE}#sae={key}&f={feature}", f"f{feature}" if text is None else text)


def sae_keys(saes: list[dict]) -> dict[tuple, str]:
    """{(recipe, site, layer, variant): feature-page key} of the catalogue."""
    return {(s["recipe"], s["site"], s["layer"], s["variant"]): s["key"] for s in saes}


def sae_row(e: dict) -> list:
    """One SAE's eval.json as a row of `SAE_COLUMNS`."""
    task, lm = e["downstream"].get("task") or {}, e["downstream"].get("lm")
    return [
        e["sae"],
        e["architecture"],
        e["site"],
        e["layer"],
        e["variant"],
        e["d_sae"],
        e["fvu"],
        e["l0"],
        e["dead_fraction"],
        e["dense_fraction"],
        e["cosine"],
        task.get("loss_recovered"),
        f"{task['accuracy_clean']:.3f} / {task['accuracy_spliced']:.3f}" if task else None,
        task["kl"] if task else (lm or {}).get("kl"),
        lm["loss_recovered"] if lm else None,
    ]


def sae_order(e: dict) -> tuple:
    return e["sae"], e["site"], e["layer"], VARIANT_ORDER.get(e["variant"], len(VARIANTS))


def sae_rows(evals: list[dict]) -> list[list]:
    """Rows of eval.json dicts, by recipe, site, layer and variant."""
    return [sae_row(e) for e in sorted(evals, key=sae_order)]


def pivot(frame: pl.DataFrame, keys: list[str], value, cls: str) -> Table:
    """One row per distinct `keys`, one column per (site, layer, variant); `value(row)` fills a cell."""
    columns = sorted(
        frame.select("site", "layer", "variant").unique().rows(),
        key=lambda c: (c[0], c[1], VARIANT_ORDER.get(c[2], len(VARIANTS))),
    )
    multi_site = len({c[0] for c in columns}) > 1
    names = [f"L{l} {v[:3]}" + (f" {s}" if multi_site else "") for s, l, v in columns]
    cells: dict[tuple, dict] = {}
    for row in frame.iter_rows(named=True):
        cells.setdefault(tuple(row[k] for k in keys), {})[(row["site"], row["layer"], row["variant"])] = value(row)
    return Table([*keys, *names], [[*key, *(by.get(c, "") for c in columns)] for key, by in cells.items()], cls)


def sae_key_of(keys: dict, r: dict) -> str | None:
    """The catalogue key of a probe or k-means row's SAE (its representation is ``sae:<recipe>``)."""
    return keys.get((r["representation"].removeprefix("sae:"), r["site"], r["layer"], r["variant"]))


def head_link(layer: int, head: int) -> Link:
    return Link(f"{HEADS_PAGE}#layer={layer}&head={head}", f"L{layer}H{head}", "attention patterns")
