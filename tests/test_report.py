"""report: the feature data files hold every feature's statistics, examples and diff match."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.test_features import CFG, planted_study
from workflow import features, io, report_features
from workflow.report_html import page


def _payload(path):
    text = path.read_text()
    name = json.loads(text[len("reportData("): text.index(",")])
    return name, json.loads(text[text.index(",") + 1: text.rindex(")")])


@pytest.fixture
def planted_sae(tmp_path):
    planted_study(tmp_path)
    features.run(str(tmp_path / "sae"), str(tmp_path / "acts"), str(tmp_path / "tokens.parquet"),
                 str(tmp_path / "meta.json"), {**CFG, "sentence_docs": 2, "sentence_top": 3})
    io.write_json({"sae": "relu", "architecture": "relu", "site": "resid_post", "layer": 1, "variant": "pretrained",
                   "d_sae": 16, "fvu": 0.1, "l0": 3.0, "dead_fraction": 0.0}, tmp_path / "sae/eval.json")
    return tmp_path


def test_feature_files_hold_every_feature_and_its_match(planted_sae, monkeypatch):
    monkeypatch.setattr(report_features, "CHUNK", 5)  # 16 features: files of 5, 5, 5, 1
    saes = report_features.describe_saes([str(planted_sae / "sae")])
    assert saes[0]["key"] == "pretrained-resid_post-L1-relu" and saes[0]["n_chunks"] == 4
    assert saes[0]["partner_key"] is None
    diff = pl.DataFrame({"side": ["pretrained"] * 16, "feature": range(16), "partner": [3] + [-1] * 15,
                         "decoder_cos": [0.95] + [float("nan")] * 15, "act_corr": [0.8] + [float("nan")] * 15,
                         "category": ["retained"] + ["overwritten"] * 15, "best_cos": [0.95] * 16,
                         "delta_frequency": [0.0] * 16})
    out = planted_sae / "site"
    report_features.write_feature_data(saes, {("relu", "resid_post", 1): diff}, out)
    table = pl.read_parquet(planted_sae / "sae/features.parquet")
    examples = pl.read_parquet(planted_sae / "sae/examples.parquet")
    records = []
    for n in range(4):
        name, chunk = _payload(out / f"data/features/pretrained-resid_post-L1-relu/c{n}.js")
        assert name == f"features/pretrained-resid_post-L1-relu/c{n}" and len(chunk) == (5 if n < 3 else 1)
        records += chunk
    for r, row in zip(records, table.iter_rows(named=True)):
        assert r["feature"] == row["feature"] and r["auroc:pos"] == pytest.approx(row["auroc:pos"])
        assert r["hist_counts"] == row["hist_counts"] and r["best_class"] in ("neg", "pos")
        mine = examples.filter(pl.col("feature") == r["feature"])
        assert [e["kind"] for e in r["examples"]] == sorted(mine["kind"].to_list(), reverse=True)  # top first
        for e in r["examples"]:
            assert e["acts"][e["center"]] == pytest.approx(e["activation"], abs=2e-3)
    assert records[0]["match"] == {"partner": 3, "category": "retained", "decoder_cos": pytest.approx(0.95),
                                   "act_corr": pytest.approx(0.8), "best_cos": pytest.approx(0.95), "delta_frequency": 0.0}
    assert records[1]["match"]["decoder_cos"] is None  # NaN is written as null
    # feature 1 separates the classes (planted): the page opens on it
    assert saes[0]["default_feature"] == 1
    _, index = _payload(out / "data/features/pretrained-resid_post-L1-relu/index.js")
    assert index["category"][:2] == ["retained", "overwritten"] and len(index["feature"]) == 16


def test_sentence_data_lists_each_token_with_its_features(planted_sae):
    saes = report_features.describe_saes([str(planted_sae / "sae")])
    data = report_features.sentence_data(saes)
    sentences = pl.read_parquet(planted_sae / "sae/sentences.parquet")
    assert [d["doc_id"] for d in data["docs"]] == [0, 1]
    assert sum(len(d["tokens"]) for d in data["docs"]) == len(sentences)
    per_token = [t for doc in data["features"]["pretrained-resid_post-L1-relu"] for t in doc]
    assert [[f for f, _ in t] for t in per_token] == sentences["features"].to_list()
    assert set(data["names"]["pretrained-resid_post-L1-relu"]) == {str(f) for t in per_token for f, _ in t}


def test_embedded_data_cannot_close_its_script_tag():
    html = page("t", "<p>x</p>", "", {"text": "</script><script>alert(1)</script>"})
    assert html.count("</script>") == 1 and "\\u003c/script>" in html and "<!--" not in page("t", "", "", {"a": "<!--"})
    import re
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', html).group(1))
    assert data == {"text": "</script><script>alert(1)</script>"}  # the escape is JSON: the page's script reads it back
