"""Stage `heads_summary`: the two variants' heads compared on the same tokens, and the pattern viewer."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.test_heads import CFG, _stage_inputs
from workflow.stages import heads, heads_summary


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def variants(request, tmp_path_factory):
    """The heads stage's outputs for two differently seeded variants of one tiny classifier."""
    family, tmp_path = request.param, tmp_path_factory.mktemp("heads")
    pre, tokens = _stage_inputs(tmp_path, family, 1)
    ft, _ = _stage_inputs(tmp_path, family, 2)
    out = {}
    for name, folder in (("pre", pre), ("ft", ft)):
        out[name] = tmp_path / f"heads-{name}"
        lm = {"source": str(folder), "kind": "causal", "body": None} if family == "gpt2" else None
        heads.run(str(tokens), str(folder), lm, family, CFG, str(out[name]))
    return out, tmp_path


def test_a_variant_against_itself_changed_nothing(variants):
    out, tmp_path = variants
    same = heads_summary.run(str(out["pre"]), str(out["pre"]), 2, "same", str(tmp_path / "same"))
    assert same["pattern_docs"] == 4
    change = pl.read_parquet(tmp_path / "same/changes.parquet")
    assert change["js_distance"].max() < 1e-6 and change["task_zero_delta_loss_change"].abs().max() == 0.0


def test_two_variants_differ_and_the_viewer_carries_their_patterns(variants):
    out, tmp_path = variants
    heads_summary.run(str(out["pre"]), str(out["ft"]), 2, "tiny <b>", str(tmp_path / "diff"))
    change = pl.read_parquet(tmp_path / "diff/changes.parquet")
    assert len(change) == 8 and change["js_distance"].min() > 0.0 and change["js_distance"].max() <= 1.0
    ablation = pl.read_parquet(tmp_path / "diff/ablation.parquet")
    pre = ablation.filter(
        (pl.col("variant") == "pretrained") & (pl.col("measure") == "task") & (pl.col("mode") == "zero")
    )
    expected = pre.sort("layer", "head")["delta_loss"].to_list()
    assert change.sort("layer", "head")["task_zero_delta_loss_pretrained"].to_list() == pytest.approx(expected)
    page = (tmp_path / "diff/patterns.html").read_text()
    data = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    assert len(data["examples"]) == 2 and data["layers"] == 2 and data["heads"] == 4
    assert "tiny <b>" not in page and "tiny &lt;b&gt;" in page  # the title is escaped
    assert "http://" not in page and "https://" not in page  # nothing fetched at view time
    for name in ("ablation.png", "pattern_change.png"):
        assert (tmp_path / "diff" / name).stat().st_size > 5000
