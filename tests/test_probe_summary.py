"""Stage `probe_summary`: probe tables gathered across variants and layers, tagged from each probe.json."""

from __future__ import annotations

import polars as pl
import pytest

from workflow.stages import probe_summary
from workflow.store.files import write_json


def _probe_folder(folder, variant: str, layer: int, accuracy: float):
    """A probe folder as stage `probe` writes it; its name says nothing (probe.json does)."""
    folder.mkdir(parents=True)
    write_json({"variant": variant, "site": "resid_post", "layer": layer}, folder / "probe.json")
    pl.DataFrame(
        {
            "representation": ["raw", "raw"],
            "pooling": ["mean", "first"],
            "accuracy": [accuracy, accuracy - 0.1],
            "macro_f1": [accuracy, accuracy],
            "chance": [0.5, 0.5],
        }
    ).write_parquet(folder / "sequence.parquet")
    pl.DataFrame(
        {"representation": ["raw"] * 2, "pooling": ["mean"] * 2, "k": [1, 2], "accuracy": [accuracy - 0.2, accuracy]}
    ).write_parquet(folder / "sparse.parquet")
    pl.DataFrame({"representation": ["raw"], "rank": [0], "feature": [3]}).write_parquet(folder / "ranked.parquet")
    pl.DataFrame(schema={"representation": pl.Utf8, "concept": pl.Utf8, "auroc": pl.Float64}).write_parquet(
        folder / "tokens.parquet"
    )


def test_rows_are_tagged_with_what_each_probe_json_says(tmp_path):
    _probe_folder(tmp_path / "x", "finetuned", 4, 0.95)
    _probe_folder(tmp_path / "y", "pretrained", 4, 0.70)
    _probe_folder(tmp_path / "z", "pretrained", 2, 0.60)
    probe_summary.run([str(tmp_path / n) for n in "xyz"], "m on d", str(tmp_path / "out"))
    probes = pl.read_parquet(tmp_path / "out/probes.parquet")
    assert probes.select("variant", "layer").unique(maintain_order=True).rows() == [
        ("finetuned", 4),
        ("pretrained", 2),
        ("pretrained", 4),
    ]  # sorted by variant, site, layer
    mean = probes.filter(pl.col("pooling") == "mean")
    assert dict(zip(zip(mean["variant"], mean["layer"]), mean["accuracy"])) == pytest.approx(
        {("finetuned", 4): 0.95, ("pretrained", 4): 0.70, ("pretrained", 2): 0.60}
    )
    sparse = pl.read_parquet(tmp_path / "out/sparse.parquet")
    assert len(sparse) == 6 and set(sparse["site"]) == {"resid_post"}
    assert pl.read_parquet(tmp_path / "out/ranked.parquet")["feature"].to_list() == [3, 3, 3]
    for name in ("probe_accuracy.png", "sparse.png"):
        assert (tmp_path / "out" / name).stat().st_size > 5000
