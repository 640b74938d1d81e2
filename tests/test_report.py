"""report: the feature data files, the section builders, the rendered pages (escaped, self-contained),
the stage's report folder and the README's tables, from a tiny planted SAE and hand-made analysis tables."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import polars as pl
import pytest

from tests.test_features import CFG as FEATURE_STAGE_CFG
from tests.test_features import planted_study
from workflow import layout
from workflow.layout import VARIANTS
from workflow.plan import Plan
from workflow.report import feature_data, probe_sections, sections
from workflow.report.render import Image, Link, Parts, Pill, Table, number, render, script_json
from workflow.report.summary import summary
from workflow.stages import features, report
from workflow.store.files import write_json, write_parquet

FEATURES_CFG = {**FEATURE_STAGE_CFG, "sentence_docs": 2, "sentence_top": 3}
HOSTILE = '<b>"x"</b>'
MODEL, DATASET, RECIPE, SITE, LAYER = "tiny", "toy", "relu", "resid_post", 1
STUDY = {
    "models": {
        MODEL: {"family": "bert", "source": "unused", "layers": [LAYER], "lm": None, "finetuned": {"kind": "classify"}}
    },
    "datasets": {DATASET: {"source": "builtin", "labelled": True}},
    "sites": [SITE],
    "saes": {RECIPE: {"architecture": "relu"}},
    "probe": {},
    "heads": {},
    "extract": {"splits": ["test"]},
    "tokenize": {"max_length": 10, "stride": None, "truncation_warning": 0.2},
}
W = {"model": MODEL, "dataset": DATASET}


def planted_sae(folder, sae_dir=None, labels=("neg", "pos"), variant="pretrained", n_docs=60, doc_len=10, d=16, seed=0):
    """Rows are sums of 2 of d axis directions and the SAE is the identity with a small threshold, so
    feature i fires exactly where direction i is present: concept "c0" marks direction 0, documents of
    class 1 carry direction 1 on every token. Writes tokens, activations and meta.json into `folder`, and
    the SAE with its features tables and eval.json into `sae_dir` (default folder/sae)."""
    where = {"model": MODEL, "variant": variant, "dataset": DATASET, "site": SITE, "layer": LAYER, "sae": RECIPE}
    sae_dir = sae_dir or folder / "sae"
    planted_study(folder, n_docs, doc_len, d, seed, sae_dir=sae_dir, study=where, labels=labels)
    features.run(
        str(sae_dir), str(folder / "acts"), str(folder / "tokens.parquet"), str(folder / "meta.json"), FEATURES_CFG
    )
    task = {"loss_recovered": 0.9, "accuracy_clean": 0.9, "accuracy_spliced": 0.85, "kl": 0.01}
    write_json(
        {
            **where,
            "architecture": "relu",
            "d_sae": d,
            "fvu": 0.1,
            "l0": 3.0,
            "dead_fraction": 0.0,
            "dense_fraction": 0.0625,
            "cosine": 0.95,
            "downstream": {"task": task},
        },
        sae_dir / "eval.json",
    )
    return sae_dir


def _payload(path):
    """(name, payload) of a data file: reportData("name", payload);"""
    text = path.read_text()
    return json.loads(text[len("reportData(") : text.index(",")]), json.loads(
        text[text.index(",") + 1 : text.rindex(")")]
    )


@pytest.fixture
def sae_dir(tmp_path):
    return planted_sae(tmp_path)


def test_feature_files_hold_every_feature_and_its_match(sae_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(feature_data, "CHUNK", 5)  # 16 features: files of 5, 5, 5, 1
    saes = feature_data.describe_saes([str(sae_dir)])
    assert saes[0]["key"] == "pretrained-resid_post-L1-relu" and saes[0]["n_chunks"] == 4
    assert saes[0]["partner_key"] is None
    diff = pl.DataFrame(
        {
            "side": ["pretrained"] * 16,
            "feature": range(16),
            "partner": [3] + [-1] * 15,
            "decoder_cos": [0.95] + [float("nan")] * 15,
            "act_corr": [0.8] + [float("nan")] * 15,
            "category": ["retained"] + ["overwritten"] * 15,
            "best_cos": [0.95] * 16,
            "delta_frequency": [0.0] * 16,
        }
    )
    out = tmp_path / "page"
    feature_data.write_feature_data(saes, {(RECIPE, SITE, LAYER): diff}, out)
    table = pl.read_parquet(sae_dir / "features.parquet")
    examples = pl.read_parquet(sae_dir / "examples.parquet")
    records = []
    for n in range(4):
        name, chunk = _payload(out / f"data/features/pretrained-resid_post-L1-relu/c{n}.js")
        assert name == f"features/pretrained-resid_post-L1-relu/c{n}" and len(chunk) == (5 if n < 3 else 1)
        records += chunk
    assert [r["feature"] for r in records] == list(range(16))
    for r, row in zip(records, table.iter_rows(named=True)):
        assert r["auroc:pos"] == pytest.approx(row["auroc:pos"]) and r["hist_counts"] == row["hist_counts"]
        assert r["best_class"] in ("neg", "pos")
        mine = examples.filter(pl.col("feature") == r["feature"])
        assert [e["kind"] for e in r["examples"]] == sorted(mine["kind"].to_list(), reverse=True)  # top first
        for e in r["examples"]:
            assert e["acts"][e["center"]] == pytest.approx(e["activation"], abs=2e-3)
    assert records[0]["match"] == {
        "partner": 3,
        "category": "retained",
        "decoder_cos": pytest.approx(0.95),
        "act_corr": pytest.approx(0.8),
        "best_cos": pytest.approx(0.95),
        "delta_frequency": 0.0,
    }
    assert records[1]["match"]["decoder_cos"] is None  # NaN is written as null
    assert saes[0]["default_feature"] == 1  # feature 1 separates the classes (planted): the page opens on it
    _, index = _payload(out / "data/features/pretrained-resid_post-L1-relu/index.js")
    assert index["category"][:2] == ["retained", "overwritten"] and index["feature"] == list(range(16))


def test_sentence_data_lists_each_token_with_its_features(sae_dir):
    saes = feature_data.describe_saes([str(sae_dir)])
    data = feature_data.sentence_data(saes)
    sentences = pl.read_parquet(sae_dir / "sentences.parquet")
    assert [d["doc_id"] for d in data["docs"]] == [0, 1]
    assert sum(len(d["tokens"]) for d in data["docs"]) == len(sentences)
    per_token = [t for doc in data["features"]["pretrained-resid_post-L1-relu"] for t in doc]
    assert [[f for f, _ in t] for t in per_token] == sentences["features"].to_list()
    assert set(data["names"]["pretrained-resid_post-L1-relu"]) == {str(f) for t in per_token for f, _ in t}


def test_embedded_data_cannot_close_its_script_tag():
    hostile = {"text": "</script><script>alert(1)</script>", "comment": "<!--", "missing": float("nan")}
    page = render("sentences.html.j2", title="t", heading="h", pages=layout.REPORT.names, data=hostile)
    assert page.count("</script>") == 2  # the data element's and the page script's own
    assert "\\u003c/script>" in page and "<!--" not in page and "NaN" not in page
    embedded = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1)
    assert json.loads(embedded) == {**hostile, "missing": None}  # the escape is JSON: the page's script reads it back
    assert script_json({"a": "<"}) == '{"a":"\\u003c"}'


def test_numbers_are_formatted_for_the_page():
    assert [number(0.123456), number(0.123456, 1), number(float("nan")), number(None), number(True), number(7)] == [
        "0.123",
        "0.1",
        "n/a",
        "n/a",
        "yes",
        "7",
    ]


def test_accuracy_rows():
    metrics = {
        "pretrained": {"accuracy": 0.5, "macro_f1": 0.3},
        "finetuned": {"accuracy": 0.9, "macro_f1": 0.85},
        "train": {"epochs": 1, "steps": 3, "tokens": 100, "seconds": 2.0, "tokens_per_s": 50.0},
        "device": "cpu",
    }
    meta = {"n_train": 10, "n_test": 5, "label_names": ["a", "b"], "bow_baseline": {"accuracy": 0.7, "macro_f1": 0.6}}
    out = sections.accuracy(metrics, meta, {"pretrained": {"accuracy": 0.8, "macro_f1": 0.75}}, "classify")
    assert out["table"].rows == [
        ["pretrained (fresh classifier)", 0.5, 0.3],
        ["pretrained + fitted linear classifier", 0.8, 0.75],
        ["fine-tuned", 0.9, 0.85],
        ["bag-of-words baseline", 0.7, 0.6],
    ]
    assert out["labels"] == "a, b" and out["table"].cls == "accuracy" and out["table"].digits == 4
    assert len(sections.accuracy(metrics, meta, {}, "classify")["table"].rows) == 3
    # a checkpoint (or LM fine-tune): both variants scored by a linear classifier on frozen features
    frozen = {"pretrained": {"accuracy": 0.8, "macro_f1": 0.75}, "finetuned": {"accuracy": 0.85, "macro_f1": 0.8}}
    assert sections.accuracy(None, meta, frozen, "checkpoint")["table"].rows == [
        ["pretrained + fitted linear classifier", 0.8, 0.75],
        ["fine-tuned + fitted linear classifier", 0.85, 0.8],
        ["bag-of-words baseline", 0.7, 0.6],
    ]
    assert sections.task_accuracy(None, frozen, "checkpoint") == {"pretrained": 0.8, "finetuned": 0.85}
    assert sections.accuracy(None, {**meta, "labelled": False}, {}, "checkpoint") is None


def _diff_summary(recipe=RECIPE, layer=LAYER):
    return {
        "model": MODEL,
        "dataset": DATASET,
        "sae": recipe,
        "site": SITE,
        "layer": layer,
        "categories": {
            "pretrained": {
                "counts": {"retained": 5, "drifted": 2, "overwritten": 7, "dead": 2},
                "fractions": {"retained": 0.3125, "drifted": 0.125, "overwritten": 0.4375, "dead": 0.125},
            },
            "finetuned": {
                "counts": {"retained": 5, "drifted": 2, "new": 8, "dead": 1},
                "fractions": {"retained": 0.3125, "drifted": 0.125, "new": 0.5, "dead": 0.0625},
            },
        },
        "matched_cosine_median": 0.81,
        "init_cosine_median": {"pretrained": 0.2, "finetuned": 0.25},
        "transfer": [
            {"sae": s, "activations": a, "explained_variance": ev, "task_loss_recovered": tl}
            for (s, a), ev, tl in zip(sections.TRANSFER_PAIRS, (0.9, 0.8, 0.7, 0.6), (0.95, 0.85, float("nan"), 0.5))
        ],
    }


def _changed():
    return pl.DataFrame(
        {
            "kind": ["drifted", "new"],
            "pretrained_feature": [3, -1],
            "finetuned_feature": [4, 9],
            "decoder_cos": [0.7, None],
            "act_corr": [0.2, None],
            "delta_frequency": [0.01, 0.05],
            "pretrained_top_tokens": [["a", "b"], None],
            "finetuned_top_tokens": [["c"], ["d", "e"]],
        }
    )


def _entry(variant, recipe=RECIPE, concepts=()):
    e = {
        "sae": recipe,
        "architecture": "relu",
        "site": SITE,
        "layer": LAYER,
        "variant": variant,
        "d_sae": 16,
        "fvu": 0.1,
        "l0": 3.0,
        "dead_fraction": 0.0,
        "dense_fraction": 0.0,
        "cosine": 0.9,
        "downstream": {"task": {"loss_recovered": 0.9, "accuracy_clean": 0.9, "accuracy_spliced": 0.8, "kl": 0.1}},
    }
    best = {c: {"feature": 2, "f1": 0.875, "precise_features": 1, "precise_union_recall": 0.5} for c in concepts}
    features_json = {"label_names": ["a"], "concepts": list(concepts), "best_feature_per_concept": best}
    return feature_data.sae_entry(f"results/saes/{variant}", e, features_json)


def test_diff_counts_transfer_and_changed_features():
    saes = [_entry("pretrained"), _entry("finetuned")]
    out = sections.diff([{"summary": _diff_summary(), "changed": _changed()}], {RECIPE: [None]}, saes)
    assert out["categories"].rows == [[RECIPE, SITE, LAYER, 5, 2, 7, 2, 8, 1, 0.81]]
    assert out["transfer"].rows == [[RECIPE, SITE, LAYER, 0.9, 0.95, 0.8, 0.85, 0.7, None, 0.6, 0.5]]  # NaN: n/a
    assert out["recipes"] == [{"name": RECIPE, "images": []}]  # a missing plot is left out
    [changed] = out["changed"]
    assert changed["title"] == "relu resid_post L1" and changed["count"] == 2
    first, second = changed["table"].rows
    assert first[2] == Pill("drifted") and first[3] == Link("feature.html#sae=pretrained-resid_post-L1-relu&f=3", "f3")
    assert first[4].href == "feature.html#sae=finetuned-resid_post-L1-relu&f=4" and first[8] == "a b"
    assert second[3] == "n/a" and second[5] is None and second[8] == ""  # a new feature has no pretrained partner
    assert sections.diff([], {}, saes) is None


def test_heads_are_ranked_by_the_loss_their_ablation_costs():
    change = pl.DataFrame(
        {
            "layer": [1, 1, 2, 2],
            "head": [0, 1, 0, 1],
            "type_pretrained": ["self", "previous", "broad", "first"],
            "type_finetuned": ["self", "broad", "broad", "first"],
            "js_distance": [0.1, 0.4, float("nan"), 0.2],
            "task_zero_delta_loss_pretrained": [0.5, 0.1, float("nan"), 0.3],
            "task_zero_delta_loss_finetuned": [0.0, 0.2, 0.9, 0.1],
        }
    )
    out = sections.heads(change, {"ablation": Image("img/a.png", "a"), "change": None}, top=3)
    rows = out["important"].rows
    assert [r[0] for r in rows] == [1, 2, 3]
    assert [(r[1].text, r[3]) for r in rows] == [("L1H0", 0.5), ("L2H1", 0.3), ("L1H1", 0.1)]  # NaN last, not first
    assert [(r[4].text, r[6]) for r in rows] == [("L2H0", 0.9), ("L1H1", 0.2), ("L2H1", 0.1)]
    assert rows[0][1].href == "heads.html#layer=1&head=0" and rows[0][2] == "self"
    assert [r[0].text for r in out["changed"].rows] == ["L1H1", "L2H1", "L1H0"]
    assert out["changed"].header[-2:] == ["zero abl. Δloss pre", "zero abl. Δloss fin"]


def test_probe_tables_pivot_layers_and_link_ranked_features():
    where = {"variant": ["pretrained", "finetuned"], "site": [SITE] * 2, "layer": [LAYER] * 2}
    tables = {
        "probes": pl.DataFrame(
            {
                **where,
                "representation": ["sae:relu"] * 2,
                "pooling": ["mean"] * 2,
                "accuracy": [0.6, 0.9],
                "macro_f1": [0.5, 0.85],
                "chance": [0.5, 0.5],
            }
        ),
        "sparse": pl.DataFrame(
            {**where, "representation": ["raw"] * 2, "pooling": ["mean"] * 2, "k": [1, 1], "accuracy": [0.55, 0.7]}
        ),
        "ranked": pl.DataFrame(
            {
                **where,
                "representation": ["sae:relu", "raw"],
                "pooling": ["mean"] * 2,
                "rank": [0, 0],
                "feature": [7, 3],
                "top_class": ["a", "b"],
                "f_score": [2.5, 1.0],
                "top_tokens": [["x", "y"], ["z"]],
            }
        ),
        "tokens": pl.DataFrame(schema={"representation": pl.Utf8}),
    }
    out = probe_sections.probes(tables, [_entry("pretrained")], {})
    assert out["sequence"].header == ["representation", "pooling", "L1 pre", "L1 fin"]
    assert out["sequence"].rows == [["sae:relu", "mean", "0.600 / 0.500", "0.900 / 0.850"]]
    assert out["sparse"]["table"].rows == [["raw", 1, "0.550", "0.700"]] and out["tokens"] is None
    [ranked] = out["ranked"].rows  # only SAE representations, linked to the SAE's feature page
    assert ranked[4] == Link("feature.html#sae=pretrained-resid_post-L1-relu&f=7", "f7") and ranked[3] == 1


def _page_context(saes):
    sim = pl.DataFrame(
        {
            "layer": [0],
            "hook_name": ["embed"],
            "n_tokens": [10],
            "mean_cosine": [1.0],
            "token_cosine": [1.0],
            "cka_debiased": [1.0],
            "cka_biased": [1.0],
            "norm_ratio": [1.0],
        }
    )
    metrics = {
        "pretrained": {"accuracy": 0.5, "macro_f1": 0.3},
        "finetuned": {"accuracy": 0.9, "macro_f1": 0.85},
        "train": {"epochs": 1, "steps": 3, "tokens": 100, "seconds": 2.0, "tokens_per_s": 50.0},
        "device": "cpu",
    }
    meta = {"n_train": 10, "n_test": 5, "label_names": [HOSTILE], "bow_baseline": {"accuracy": 0.7, "macro_f1": 0.6}}
    paths = {"metrics": "results/models/m/d/metrics.json", "similarity": "results/s.parquet", "meta": "results/m.json"}
    return {
        "variant": sections.variant("classify", metrics, None),
        "accuracy": sections.accuracy(metrics, meta, {}, "classify"),
        "lm": None,
        "skipped": [],
        "similarity": sections.similarity(sim, None),
        "saes": sections.saes(saes, "results/reports/m/d"),
        "concepts": sections.concepts(saes),
        "diff": sections.diff([{"summary": _diff_summary(HOSTILE), "changed": _changed()}], {HOSTILE: []}, saes),
        "methods": None,
        "probes": None,
        "kmeans": None,
        "heads": None,
        "emergence": None,
        "truth": None,
        "files": sections.files(paths, [], "results/reports/m/d"),
    }


def test_hostile_recipe_and_label_names_are_escaped():
    saes = [_entry("pretrained", HOSTILE, [HOSTILE]), _entry("finetuned", HOSTILE, [HOSTILE])]
    page = render(
        "report.html.j2",
        title=HOSTILE,
        heading=HOSTILE,
        pages=layout.REPORT.names,
        index_href="../../i.html",
        has_features=True,
        **_page_context(saes),
    )
    assert HOSTILE not in page and "<b>" not in page
    assert page.count("&lt;b&gt;&#34;x&#34;&lt;/b&gt;") >= 8  # title, heading, labels, recipe cells, concept column
    assert 'href="feature.html#sae=pretrained-resid_post-L1-&lt;b&gt;&#34;x&#34;&lt;/b&gt;&amp;f=3"' in page
    assert 'class="saes"' in page and 'class="diff-categories"' in page and 'id="concepts"' in page
    assert 'id="probes"' not in page and 'href="#heads"' not in page  # sections without data are left out


def test_tables_render_cells_of_every_kind():
    table = Table(
        ["a", "b"], [[0.12345, Parts((Link("x?a=1&b=2", "l", "tip"), "t"), " · ")], [None, Pill("new")]], "t", 2
    )
    html = render("index.html.j2", title="t", index=table, notes=[])
    assert '<td>0.12</td><td class="l"><a href="x?a=1&amp;b=2" title="tip">l</a> · t</td>' in html
    assert '<td>n/a</td><td class="l"><span class="pill new">new</span></td>' in html


def _png(path, colour):
    from PIL import Image as Picture

    path.parent.mkdir(parents=True, exist_ok=True)
    Picture.new("RGB", (60, 30), colour).save(path)


def _feature_matches(side):
    """diff.parquet rows of one side: features 0-4 retained, 5-6 drifted (partner: the same id), others not."""
    other = "new" if side == "finetuned" else "overwritten"
    category = ["retained"] * 5 + ["drifted"] * 2 + [other] * 9
    return pl.DataFrame(
        {
            "side": [side] * 16,
            "feature": range(16),
            "partner": list(range(7)) + [-1] * 9,
            "decoder_cos": [0.9] * 7 + [float("nan")] * 9,
            "act_corr": [0.8] * 7 + [None] * 9,
            "category": category,
            "best_cos": [0.9] * 16,
            "delta_frequency": [0.0] * 16,
        }
    )


def _write_analysis(root):
    """Everything but the SAEs that the report of (MODEL, DATASET) reads, at its layout paths under `root`."""
    write_json(
        {
            "label_names": ["neg", HOSTILE],
            "n_train": 100,
            "n_test": 60,
            "concepts": ["c0"],
            "bow_baseline": {"accuracy": 0.61, "macro_f1": 0.6},
        },
        root / layout.DATA.file("meta", dataset=DATASET),
    )
    write_json(
        {
            "pretrained": {"accuracy": 0.5, "macro_f1": 0.33},
            "finetuned": {"accuracy": 0.9375, "macro_f1": 0.93},
            "train": {"epochs": 1, "steps": 10, "tokens": 1000, "seconds": 12.4, "tokens_per_s": 80.6},
            "device": "cpu",
        },
        root / layout.FINETUNED.file("metrics", kind="classify", **W),
    )
    write_json({"accuracy": 0.7812, "macro_f1": 0.77}, root / layout.FROZEN.file("metrics", variant="pretrained", **W))
    similarity = pl.DataFrame(
        {
            "layer": [0, 1],
            "hook_name": ["embed", "blocks.0.hook_resid_post"],
            "n_tokens": [600, 600],
            "mean_cosine": [1.0, 0.8],
            "token_cosine": [1.0, 0.7],
            "cka_debiased": [1.0, 0.6543],
            "cka_biased": [1.0, 0.7],
            "norm_ratio": [1.0, 1.1],
        }
    )
    write_parquet(similarity, root / layout.SIMILARITY.file("table", **W))
    _png(root / layout.SIMILARITY.file("plot", **W), "red")
    diff = root / layout.DIFF.path(site=SITE, layer=LAYER, sae=RECIPE, **W)
    diff.mkdir(parents=True)
    write_json(_diff_summary(), diff / "diff.json")
    pl.concat([_feature_matches(v) for v in ("pretrained", "finetuned")]).write_parquet(diff / "diff.parquet")
    _changed().write_parquet(diff / "changed.parquet")
    for n, colour in (("categories_plot", "blue"), ("transfer_plot", "green"), ("cosine_plot", "gray")):
        _png(root / layout.DIFF_SUMMARY.file(n, sae=RECIPE, **W), colour)
    _write_probes(root)
    _write_heads(root)


def _write_probes(root):
    where = {"variant": ["pretrained", "finetuned"], "site": [SITE] * 2, "layer": [LAYER] * 2}
    probes = root / layout.PROBE_SUMMARY.path(**W)
    probes.mkdir(parents=True)
    pl.DataFrame(
        {
            **where,
            "representation": ["sae:relu"] * 2,
            "pooling": ["mean"] * 2,
            "accuracy": [0.6, 0.875],
            "macro_f1": [0.5, 0.85],
            "chance": [0.5, 0.5],
        }
    ).write_parquet(probes / "probes.parquet")
    pl.DataFrame(
        {**where, "representation": ["sae:relu"] * 2, "pooling": ["mean"] * 2, "k": [1, 1], "accuracy": [0.55, 0.7]}
    ).write_parquet(probes / "sparse.parquet")
    pl.DataFrame(
        {
            **where,
            "representation": ["sae:relu"] * 2,
            "pooling": ["mean"] * 2,
            "rank": [0, 0],
            "feature": [1, 1],
            "top_class": ["neg", HOSTILE],
            "f_score": [2.5, 3.0],
            "top_tokens": [["t1"], ["t2"]],
        }
    ).write_parquet(probes / "ranked.parquet")
    pl.DataFrame(
        {
            **where,
            "representation": ["raw"] * 2,
            "concept": ["c0"] * 2,
            "auroc": [0.9, 0.95],
            "average_precision": [0.5, 0.6],
        }
    ).write_parquet(probes / "tokens.parquet")
    for n in ("accuracy_plot", "sparse_plot"):
        _png(probes / layout.PROBE_SUMMARY.names[n], "yellow")
    kmeans = root / layout.KMEANS.path(**W)
    kmeans.mkdir(parents=True)
    pl.DataFrame(
        {
            **where,
            "representation": ["sae:relu"] * 2,
            "pooling": ["mean"] * 2,
            "n_clusters": [2, 2],
            "ari": [0.1, 0.5],
            "purity": [0.6, 0.8],
            "silhouette": [0.2, 0.3],
        }
    ).write_parquet(kmeans / "scores.parquet")
    pl.DataFrame(
        {
            **where,
            "representation": ["sae:relu"] * 2,
            "cluster": [0, 0],
            "size": [30, 30],
            "majority": ["neg", HOSTILE],
            "majority_share": [0.6, float("nan")],
            "top_features": [[1, 2], [3]],
            "nearest_texts": [["a text"], ["another"]],
        }
    ).write_parquet(kmeans / "clusters.parquet")
    _png(kmeans / "clusters.png", "purple")


def _write_heads(root):
    from workflow.report import heads_viewer

    folder = root / layout.HEADS_SUMMARY.path(**W)
    folder.mkdir(parents=True)
    change = pl.DataFrame(
        {
            "layer": [1, 1, 2, 2],
            "head": [0, 1, 0, 1],
            "type_pretrained": ["self", "broad"] * 2,
            "type_finetuned": ["self", "first"] * 2,
            "js_distance": [0.1, 0.4, 0.3, 0.2],
            "task_zero_delta_loss_pretrained": [0.5, 0.1, 0.2, 0.3],
            "task_zero_delta_loss_finetuned": [0.0, 0.2, 0.9, float("nan")],
        }
    )
    change.write_parquet(folder / "changes.parquet")
    rng = np.random.default_rng(0)
    docs = [{"doc_id": i, "label": i % 2, "tokens": [f"w{i}{j}" for j in range(4)]} for i in range(2)]
    patterns = {v: {f"doc{i}": rng.dirichlet(np.ones(4), (2, 2, 4)) for i in range(2)} for v in VARIANTS}
    (folder / "patterns.html").write_text(heads_viewer.viewer(docs, patterns, change, 2, f"{MODEL} on {HOSTILE}"))
    for n in ("ablation_plot", "change_plot"):
        _png(folder / layout.HEADS_SUMMARY.names[n], "orange")
    write_json({"n_docs": 20}, root / layout.HEADS.file("summary", variant="finetuned", **W))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished tiny study (hand-made analysis tables, two planted SAEs) and its report folder, built with
    the command line the plan gives the report job."""
    root = tmp_path_factory.mktemp("study")
    for variant in VARIANTS:
        work = root / f"work-{variant}"
        work.mkdir()
        planted_sae(
            work,
            root / layout.SAE.path(variant=variant, site=SITE, layer=LAYER, sae=RECIPE, **W),
            labels=("neg", HOSTILE),
            variant=variant,
        )
        write_json(
            {**W, "variant": variant, "split": "test", "sets": [f"{SITE}/L{LAYER}"], "n_tokens": 600},
            root / layout.ACTIVATIONS.file("summary", variant=variant, split="test", **W),
        )
    _write_analysis(root)
    _write_truncation(root, {"train": [0] * 99 + [30], "test": [0] * 58 + [12, 8]})
    _report(root)
    return root


def _write_truncation(root, cut: dict) -> None:
    """Stage tokens' truncation summaries: `cut` gives each split's tokens lost per document
    (10 tokens kept of each)."""
    from workflow.datasets.tokenize import truncation

    for split, lost in cut.items():
        summary = truncation(lost, 10 * len(lost), 10)
        write_json(summary, root / layout.TOKENS.file("truncation", split=split, **W))


def _report(root) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the plan's paths are relative to the study folder
        args = Plan(STUDY).report_args(MODEL, DATASET)
        report.main(["--model", MODEL, "--dataset", DATASET, *args, "--out-dir", layout.REPORT.path(**W)])


def test_report_folder_shows_the_numbers_and_links(study):
    folder = study / layout.REPORT.path(**W)
    page = (folder / "index.html").read_text()
    assert "0.9375" in page and "0.7812" in page and 'src="img/similarity.png"' in page
    for section in ("accuracy", "similarity", "saes", "concepts", "diff", "changed", "probes", "heads", "files"):
        assert page.count(f'id="{section}"') == 1, section
    for table in ("changed", "ranked", "cluster-details"):  # rows that name a feature link to its page
        body = page.split(f'<table class="{table}">')[1].split("</table>")[0]
        assert 'href="feature.html#sae=' in body, table
    assert 'href="heads.html#layer=2&amp;head=0"' in page  # the most costly fine-tuned head links to its patterns
    assert 'href="../../../activations/tiny/finetuned/toy/test/resid_post/L1"' in page
    assert 'href="../../../saes/tiny/pretrained/toy/resid_post/L1/relu"' in page and 'href="../../index.html"' in page
    assert HOSTILE not in page and "&lt;b&gt;&#34;x&#34;&lt;/b&gt;" in page
    images = re.findall(r'<img alt="[^"]*" src="(img/[^"]+)">', page)
    assert len(images) == 9 and all((folder / src).stat().st_size > 0 for src in images), images
    assert (folder / "heads.html").read_text() == (study / layout.HEADS_SUMMARY.file("viewer", **W)).read_text()
    for name in ("index.html", "feature.html", "sentences.html", "heads.html"):
        text = (folder / name).read_text()
        assert "http://" not in text and "https://" not in text and "{{" not in text, name
    names = sorted(p.name for p in (folder / "data/features").iterdir())
    assert names == ["finetuned-resid_post-L1-relu", "pretrained-resid_post-L1-relu"]
    summary_json = json.loads((folder / "summary.json").read_text())
    assert summary_json == {
        "model": MODEL,
        "dataset": DATASET,
        "n_saes": 2,
        "accuracy_pretrained": 0.5,
        "accuracy_finetuned": 0.9375,
        "last_layer_cka": 0.6543,
        "last_layer_mean_cosine": 0.8,
        "retained_fraction": 7 / 14,
        "best_probe": 0.875,
        "lm_loss_pretrained": None,
        "lm_loss_finetuned": None,
        "mean_kl": None,
        "variant": "classify",
        "warnings": [],  # 0.9375 beats the majority class and the bag-of-words baseline (0.93)
        "pages": {
            "report": "index.html",
            "features": "feature.html",
            "sentences": "sentences.html",
            "similarity_plot": "img/similarity.png",
        },
    }


def test_a_fine_tune_that_did_not_learn_the_task_gets_a_banner_on_the_index(study, tmp_path):
    from workflow.stages import report_index

    folder = tmp_path / "reports/tiny/toy"
    shutil.copytree(study / layout.REPORT.path(**W), folder)
    summary_json = json.loads((folder / "summary.json").read_text())
    meta = {"class_counts": {"test": {"0": 45, "1": 15}}, "bow_baseline": {"accuracy": 0.93}}
    summary_json["warnings"] = sections.task_warnings({"finetuned": {"accuracy": 0.75}}, meta, {}, "classify")
    (folder / "summary.json").write_text(json.dumps(summary_json))
    report_index.run([str(folder)], str(tmp_path / "reports/index.html"))
    page = (tmp_path / "reports/index.html").read_text()
    assert 'class="banner warning"' in page and "tiny / toy: the fine-tuned model&#39;s test accuracy 0.750" in page
    assert "does not beat the majority class (0.750)" in page


def test_truncation_is_tabled_per_split_and_warns_above_the_threshold(study, tmp_path):
    page = (study / layout.REPORT.file("page", **W)).read_text()
    body = page.split('<table class="truncation">')[1].split("</table>")[0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", body)
    assert cells == ["train", "100", "1", "1000", "30", "0.029", "test", "60", "2", "600", "20", "0.032"], cells
    assert "Truncation at max_length 10" in page and "truncation at max_length" not in page  # no banner
    root = tmp_path / "study"
    shutil.copytree(study, root)
    _write_truncation(root, {"train": [0] * 100, "test": [40] * 60})  # 80% of the test tokens cut
    _report(root)
    page = (root / layout.REPORT.file("page", **W)).read_text()
    assert 'class="banner warning">Warning: test split: truncation at max_length 10 cut 80% of the tokens' in page
    summary_json = json.loads((root / layout.REPORT.file("summary", **W)).read_text())
    (warning,) = summary_json["warnings"]
    assert "2,400 of 3,000; 60 of 60 documents cut" in warning


def test_feature_page_embeds_the_catalogue(study):
    page = (study / layout.REPORT.file("features", **W)).read_text()
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert data["chunk"] == feature_data.CHUNK
    assert [s["key"] for s in data["saes"]] == ["pretrained-resid_post-L1-relu", "finetuned-resid_post-L1-relu"]
    assert data["saes"][0]["partner_key"] == "finetuned-resid_post-L1-relu" and data["saes"][0]["labels"][1] == HOSTILE
    assert data["saes"][0]["default_feature"] == 1 and "\\u003cb>" in page and HOSTILE not in page


def test_summary_prints_the_readme_tables(study):
    text = summary(STUDY, str(study / "results"))
    assert "| tiny / toy | 100 / 60 | 0.500 | 0.938 | 0.930 | 0.610 | 12 s |" in text
    assert "| 1 | 0.800 / 0.700 / 0.654 / 0.700 |" in text and "tokens compared: tiny / toy: 600" in text
    assert "| tiny / toy | relu | relu | resid_post | 1 | pretrained | 16 | 0.100 | 3.000 |" in text
    assert "| tiny / toy | relu | resid_post | 1 | 0.312 | 0.125 | 0.438 | 0.125 | 0.500 | 0.062 | 0.810 |" in text
    assert "| sae:relu | mean | 0.600 / 0.500 | 0.875 / 0.850 |" in text  # sequence probes, pre and ft at L1
    assert "| sae:relu | 0.100 / 0.600 / 0.200 | 0.500 / 0.800 / 0.300 |" in text  # k-means
    assert "| L1H0 (self) +0.500 | L2H0 (self) +0.900 |" in text and "(20 test documents;" in text
    assert "| L1H1 (broad) +0.100 | L2H1 (first) n/a |" in text  # NaN ranks last
    assert "| L1H1 | 0.400 | broad -> first | 0.100 / 0.200 |" in text
    assert text.endswith("fitted linear classifier (test accuracy): tiny / toy (pretrained): 0.781")
    concepts = text.split("Best single-feature F1 per planted concept")[1]
    assert "| tiny / toy | relu | resid_post | c0 | 1.000 | 1.000 |" in concepts  # feature 0 is concept c0


def test_pages_work_in_a_browser(study, tmp_path):
    """The report page, feature page, sentence view and heads viewer in headless Chromium: the numbers, the
    scripts' views, no console errors, nothing fetched but the folder's own files."""
    from tests.browser import open_browser

    folder = study / layout.REPORT.path(**W)
    key = "finetuned-resid_post-L1-relu"
    with open_browser() as page:
        page.goto((folder / "index.html").as_uri())
        assert "0.9375" in page.locator("table.accuracy").inner_text()
        assert page.locator("table.saes tbody tr").count() == 2
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert len(widths) == 9 and min(widths) > 0
        page.goto((folder / "feature.html").as_uri() + f"#sae={key}&f=1")
        page.wait_for_selector(f".panel[data-sae='{key}']")
        mine = page.locator(f".panel[data-sae='{key}']")
        assert "feature 1" in mine.locator(".feature-title").inner_text()
        assert mine.locator("svg.activation rect").count() == 20 and mine.locator("svg.density rect").count() == 24
        assert "retained" in mine.locator(".pill").first.inner_text()
        partner = page.locator(".panel[data-sae='pretrained-resid_post-L1-relu']")  # retained: shown side by side
        assert "feature 1" in partner.locator(".feature-title").inner_text()
        assert page.locator("#list tr[data-id]").count() == 16
        assert page.locator("body").get_attribute("data-ready") == "1"
        page.goto((folder / "sentences.html").as_uri() + "#doc=0&recipe=relu")
        page.wait_for_selector(".layer[data-place] .chip")
        assert page.locator(".layer[data-place='L1'] .pretrained .chip").count() == 10  # the tokens of document 0
        href = page.locator(".layer[data-place='L1'] .pretrained a.feat").first.get_attribute("href")
        assert href.startswith("feature.html#sae=pretrained-resid_post-L1-relu&f=")
        page.goto((folder / "heads.html").as_uri() + "#layer=2&head=1&example=1&query=2")
        page.wait_for_selector("#grid td.sel")
        selected = page.locator("#grid td.sel")
        assert (selected.get_attribute("data-layer"), selected.get_attribute("data-head")) == ("2", "1")
        assert page.locator("#example").input_value() == "1" and page.locator(".tok.q").count() == 2
        assert page.locator("#info").inner_text().startswith("layer 2, head 1")
        page.screenshot(path=tmp_path / "heads.png")
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests), page.requests


def test_a_scratch_models_emergence_and_truth_sections_show_their_numbers():
    from workflow.report import scratch_sections

    summary = {
        "corpus": "boards",
        "snapshots": [0, 1, 10, 100],
        "roots_decoded_095": 1,
        "n_roots": 2,
        "formed_threshold": 0.95,
        "sae": [{"sae": "topk", "site": "resid_post", "layer": 2, "mcc": 0.6, "d_sae": 64}],
        "detector_f1": {"root_0": {"f1": 0.97, "site": "resid_post", "layer": 2}},
        "roots": [
            {"factor": "root_0", "best_layer": 2, "best_balanced_accuracy": 0.97, "selectivity": 0.3, "formed_at": 10},
            {"factor": "root_1", "best_layer": 1, "best_balanced_accuracy": 0.8, "selectivity": 0.1, "formed_at": None},
        ],
    }
    sae = pl.DataFrame(
        {"sae": ["topk", "topk", "topk"], "site": ["resid_post"] * 3, "layer": [2, 3, 2], "factor": ["root_0"] * 3}
        | {"f1": [0.5, 0.85, 0.2], "threshold_f1": [0.9, 0.85, 0.3], "threshold_fraction": [0.3, 0.0, 0.5]}
    )
    section = scratch_sections.emergence(summary, sae, None)
    rows = {r[0]: r for r in section["table"].rows}
    assert rows["root_0"][4] == 10 and rows["root_1"][4].text == "not decoded" and rows["root_1"][5] == "-"
    assert rows["root_0"][5].parts[0] == 0.85 and rows["root_0"][5].parts[1].text == "topk, resid_post, L3"
    assert rows["root_0"][6].parts[0] == 0.9 and rows["root_0"][6].parts[1].text == "0.3" and rows["root_1"][6] == "-"
    assert rows["root_0"][7].parts[0] == 0.97 and rows["root_1"][7] == "-"
    context = {**_page_context([]), "emergence": section, "title": "t", "heading": "h", "index_href": "i.html"}
    html = render("report.html.j2", pages=layout.REPORT.names, has_features=False, **context)
    assert "decodes 1 of 2" in html and 'id="emergence"' in html and "boards" in html
    scored = {
        ("topk", "resid_post", 2): {
            "min_f1": 0.5,
            "truth": {"root_0": "retained"},
            "scores": {
                "matching": {
                    "accuracy": 0.5,
                    "n_roots": 2,
                    "categories": {
                        "kept": {"n_true": 1, "n_predicted": 2, "precision": 0.5, "recall": 1.0, "f1": 2 / 3}
                    },
                }
            },
        }
    }
    truth = scratch_sections.truth(scored)
    assert truth["table"].rows == [["topk", "resid_post", 2, "matching", "kept", 1, 2, 0.5, 1.0, 2 / 3]]
    assert truth["accuracy"].rows == [["topk", "resid_post", 2, "matching", 0.5, 2]]
    assert scratch_sections.truth({}) is None


def test_the_summary_prints_a_scratch_models_emergence_and_truth_tables(tmp_path):
    from workflow import config

    board = {"board_dim": 6, "abs_n": 2, "abs_dim": 2, "abs_c": 4, "comp_n": 1, "comp_c": 2, "card_test": 2}
    study = config.load(
        {
            "models": {"net": {"source": "scratch", "scratch": {"family": "bert", "corpus": "b", "layers": 2}}},
            "datasets": {
                "b": {"source": "abstractions", "board": board},
                "c": {"source": "abstractions", "board": board, "change": {"changed": [0]}},
            },
            "layers": [2],
            "saes": {"topk": {"architecture": "topk", "k": 4}},
        }
    )
    results = tmp_path / "results"
    em = {"model": "net", "dataset": "b"}
    write_json(
        {
            "snapshots": [0, 5],
            "roots_decoded_095": 1,
            "n_roots": 2,
            "roots": [
                {
                    "factor": "root_0",
                    "best_layer": 2,
                    "best_balanced_accuracy": 0.97,
                    "selectivity": 0.3,
                    "formed_at": 5,
                },
                {
                    "factor": "root_1",
                    "best_layer": 1,
                    "best_balanced_accuracy": 0.8,
                    "selectivity": 0.1,
                    "formed_at": None,
                },
            ],
            "detector_f1": {"root_0": {"f1": 0.96, "site": "resid_post", "layer": 2}},
        },
        results / layout.EMERGENCE.file("summary", **em).removeprefix("results/"),
    )
    sae = pl.DataFrame({"sae": ["topk"], "site": ["resid_post"], "layer": [2], "factor": ["root_0"], "f1": [0.55]})
    sae = sae.with_columns(threshold_f1=pl.lit(0.75), threshold_fraction=pl.lit(0.2))
    write_parquet(sae, results / layout.EMERGENCE.file("sae", **em).removeprefix("results/"))
    w = {"model": "net", "dataset": "c", "site": "resid_post", "layer": 2, "sae": "topk"}
    write_json(w, results / layout.DIFF.file("summary", **w).removeprefix("results/"))
    kept = {"n_true": 1, "n_predicted": 0, "hits": 0, "precision": None, "recall": 0.0, "f1": 0.0}
    scores = {"matching": {"accuracy": 0.5, "n_roots": 2, "categories": {"kept": kept}}}
    write_json({"scores": scores}, results / f"{layout.TRUTH.path(**w).removeprefix('results/')}/truth.json")
    from workflow.report.scratch_summary import emergence_lines, truth_lines
    from workflow.report.summary import Results

    r = Results(study, str(results))
    text = "\n".join(emergence_lines(r) + truth_lines(r))  # what `python -m workflow summary` adds for them
    assert "| root_0 | 2 | 0.970 | 0.300 | 5 | 0.550 (topk L2) | 0.750 (at 0.2 x max) | 0.960 |" in text
    assert "| root_1 | 1 | 0.800 | 0.100 | - | - | - | - |" in text and "1 of 2 roots decoded" in text
    assert "| net / c | topk resid_post L2 | matching | - / 0.000 | - | - | - | 0.500 |" in text
