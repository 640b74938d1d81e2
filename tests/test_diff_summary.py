"""Stage `diff_summary`: one recipe's diffs gathered across layers, from what each diff.json says it is."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workflow.analysis.matching import FT_CATEGORIES, PRE_CATEGORIES
from workflow.stages import diff_summary
from workflow.store.files import write_json


def _block(counts: dict) -> dict:
    return {"counts": counts, "fractions": {k: v / sum(counts.values()) for k, v in counts.items()}}


def _diff_folder(folder, layer: int, pre_counts: dict, ft_counts: dict, cosines: list[float]):
    """A diff folder as stage `diff` writes it; its name says nothing (the JSON does)."""
    folder.mkdir(parents=True)
    block = _block
    write_json(
        {
            "model": "m",
            "dataset": "d",
            "sae": "topk",
            "site": "resid_post",
            "layer": layer,
            "categories": {"pretrained": block(pre_counts), "finetuned": block(ft_counts)},
        },
        folder / "diff.json",
    )
    rows = [
        {
            "sae": s,
            "activations": a,
            "own": s == a,
            "explained_variance": 0.9 - 0.1 * layer,
            "task_loss_recovered": 0.8 + 0.01 * layer,
        }
        for s in ("pretrained", "finetuned")
        for a in ("pretrained", "finetuned")
    ]
    pl.DataFrame(rows).write_parquet(folder / "transfer.parquet")
    pl.DataFrame({"side": ["pretrained"] * len(cosines) + ["finetuned"], "decoder_cos": [*cosines, 0.3]}).write_parquet(
        folder / "diff.parquet"
    )


def test_categories_and_transfer_are_gathered_by_layer(tmp_path):
    _diff_folder(
        tmp_path / "b",
        4,
        {"retained": 2, "drifted": 1, "overwritten": 1, "dead": 0},
        {"retained": 2, "drifted": 1, "new": 0, "dead": 1},
        [0.95, 0.6, float("nan")],
    )
    _diff_folder(
        tmp_path / "a",
        2,
        {"retained": 4, "drifted": 0, "overwritten": 0, "dead": 0},
        {"retained": 4, "drifted": 0, "new": 0, "dead": 0},
        [0.99, 0.98],
    )
    diff_summary.run([str(tmp_path / "b"), str(tmp_path / "a")], "m on d", str(tmp_path / "out"))
    cats = pl.read_parquet(tmp_path / "out/categories.parquet")
    assert cats["layer"].unique(maintain_order=True).to_list() == [2, 4]  # sorted by layer, whatever the order given
    four = cats.filter((pl.col("layer") == 4) & (pl.col("side") == "pretrained"))
    assert four["category"].to_list() == list(PRE_CATEGORIES) and four["count"].to_list() == [2, 1, 1, 0]
    assert four["fraction"].to_list() == pytest.approx([0.5, 0.25, 0.25, 0.0])
    ft = cats.filter((pl.col("layer") == 4) & (pl.col("side") == "finetuned"))
    assert ft["category"].to_list() == list(FT_CATEGORIES) and ft["count"].sum() == 4
    transfer = pl.read_parquet(tmp_path / "out/transfer.parquet")
    assert len(transfer) == 8 and set(transfer["site"]) == {"resid_post"}
    own = transfer.filter(pl.col("own") & (pl.col("sae") == "pretrained")).sort("layer")
    assert own["explained_variance"].to_list() == pytest.approx([0.7, 0.5])
    for name in ("categories.png", "transfer.png", "decoder_cosine.png"):
        assert (tmp_path / "out" / name).stat().st_size > 5000
    assert np.isfinite(cats["fraction"].to_numpy()).all()
