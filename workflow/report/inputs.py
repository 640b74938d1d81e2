"""The report's inputs, parsed: stage `report` reads every file a page shows through `read_inputs`.

`paths` names the inputs (the report stage's command line): folders and files of the study's layout
(`workflow.layout`), each optional but the dataset's meta.json, the similarity table and plot and
the extract summaries. Absent inputs read as None (or empty), and the page leaves their sections out.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow import layout
from workflow.report import feature_data
from workflow.store.files import read_json


def read_diffs(diff_dirs: list[str]) -> list[dict]:
    """Each diff folder's diff.json, its per-feature table and its most changed features."""
    names = layout.DIFF.names
    return [
        {
            "summary": read_json(Path(d) / names["summary"]),
            "table": pl.read_parquet(Path(d) / names["table"]),
            "changed": pl.read_parquet(Path(d) / names["changed"]),
        }
        for d in diff_dirs
    ]


def _tables(folder: str | None, where, names: tuple[str, ...]) -> dict[str, pl.DataFrame] | None:
    """Some tables of a layout folder (`where`: its `Folder`), or None where the page has no such folder."""
    if not folder:
        return None
    return {name: pl.read_parquet(Path(folder) / where.names[name]) for name in names}


def _keyed(folders: list[str], name: str, keys: tuple[str, ...]) -> dict:
    """Each folder's JSON file `name`, by the folder's (sae, site, layer) from its diff.json beside it."""
    out = {}
    for folder in folders:
        diff = read_json(Path(folder).parent / layout.DIFF.names["summary"])
        out[tuple(diff[k] for k in keys)] = read_json(Path(folder) / name)
    return out


def _crosscoders(folders: list[str]) -> dict:
    """crosscoder.json of each crosscoder folder, grouped by (site, layer)."""
    out: dict = {}
    for folder in folders:
        summary = read_json(Path(folder) / layout.CROSSCODER.names["summary"])
        out.setdefault((summary["site"], summary["layer"]), []).append(summary)
    return out


def read_inputs(paths: dict) -> dict:
    """Everything the page shows, parsed (the folders and files of `paths`: see the report stage's `main`)."""
    heads = _tables(paths.get("heads_summary"), layout.HEADS_SUMMARY, ("changes",))
    return {
        "meta": read_json(paths["meta"]),
        "truncation": {Path(f).stem: read_json(f) for f in paths.get("truncation") or []},
        "metrics": read_json(paths["metrics"]) if paths.get("metrics") else None,
        "frozen": {v: read_json(f) for v, f in (paths.get("frozen") or {}).items()},
        "lm": read_json(Path(paths["lm_compare"]) / layout.LM_COMPARE.names["summary"])
        if paths.get("lm_compare")
        else None,
        "similarity": pl.read_parquet(paths["similarity"]),
        "extracts": [(p, read_json(p)) for p in paths.get("extracts") or []],
        "saes": feature_data.describe_saes(paths.get("saes") or []),
        "diffs": read_diffs(paths.get("diffs") or []),
        "methods": _keyed(paths.get("methods") or [], layout.METHODS.names["summary"], ("sae", "site", "layer")),
        "crosscoders": _crosscoders(paths.get("crosscoders") or []),
        "crosscoder_sides": feature_data.describe_crosscoders(paths.get("crosscoders") or []),
        "probes": _tables(paths.get("probe_summary"), layout.PROBE_SUMMARY, ("probes", "sparse", "ranked", "tokens")),
        "kmeans": _tables(paths.get("kmeans"), layout.KMEANS, ("scores", "clusters")),
        "heads": heads["changes"] if heads else None,
        "emergence": _emergence(paths.get("emergence")),
        "truth": _keyed(paths.get("truth") or [], layout.TRUTH.names["summary"], ("sae", "site", "layer")),
    }


def _emergence(folder: str | None) -> dict | None:
    """A scratch model's emergence summary and SAE alignment table (on its corpus), or None."""
    if not folder:
        return None
    names = layout.EMERGENCE.names
    return {"summary": read_json(Path(folder) / names["summary"]), "sae": pl.read_parquet(Path(folder) / names["sae"])}
