"""Reading back what other stages wrote, where more than one stage reads it."""

from __future__ import annotations

from pathlib import Path

from workflow import layout


def feature_top_tokens(sae_dir: str | None):
    """(feature, top_tokens) of an SAE's `features` table, or None where there is none."""
    import polars as pl

    path = Path(sae_dir or "") / layout.SAE.names["features"]
    if not sae_dir or not path.exists():
        return None
    return pl.read_parquet(path, columns=["feature", "top_tokens"])
