"""`workflow.report.heads_viewer`: the attention-pattern page carries every head and each example's
patterns exactly as heads.js decodes them, and no text of the study can inject markup."""

from __future__ import annotations

import base64
import json

import numpy as np
import polars as pl

from workflow.report.heads_viewer import encode, viewer

HOSTILE = '<script>alert("x")</script> & <!--'
N_LAYERS, N_HEADS = 2, 3


def _change() -> pl.DataFrame:
    layers = [layer for layer in range(1, N_LAYERS + 1) for _ in range(N_HEADS)]
    heads = [head for _ in range(N_LAYERS) for head in range(N_HEADS)]
    js = [0.123456, float("nan"), 0.5, 0.25, 0.0, 1.0]
    return pl.DataFrame(
        {
            "layer": layers,
            "head": heads,
            "type_pretrained": ["previous"] * 6,
            "type_finetuned": ["first"] * 6,
            "js_distance": js,
        }
    )


def _patterns(n_tokens: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(N_LAYERS, N_HEADS, n_tokens, n_tokens))
    return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float16)


def _page() -> tuple[str, dict, list, dict]:
    meta = [
        {"doc_id": 4, "label": 1, "tokens": ["a", "</script>", HOSTILE], "cut": False},
        {"doc_id": 9, "label": 0, "tokens": ["b", "c"], "cut": True},
        {"doc_id": 11, "label": 0, "tokens": ["d"], "cut": False},
    ]
    patterns = {
        v: {f"doc{m['doc_id']}": _patterns(len(m["tokens"]), seed + m["doc_id"]) for m in meta}
        for seed, v in enumerate(("pretrained", "finetuned"))
    }
    page = viewer(meta, patterns, _change(), 2, HOSTILE)
    data = json.loads(page.split('<script id="data" type="application/json">')[1].split("</script>")[0])
    return page, data, meta, patterns


def test_the_page_holds_every_head_and_the_first_examples():
    _, data, meta, _ = _page()
    assert (data["layers"], data["heads"]) == (N_LAYERS, N_HEADS)
    assert data["variants"] == ["pretrained", "finetuned"]
    expected = {f"{layer}:{head}" for layer in range(1, N_LAYERS + 1) for head in range(N_HEADS)}
    assert set(data["info"]) == expected
    assert data["info"]["1:0"]["js_distance"] == 0.1235  # rounded to 4 decimals
    assert data["info"]["1:1"]["js_distance"] is None  # NaN is null in the page
    assert data["info"]["2:2"]["type_finetuned"] == "first"
    assert [e["doc_id"] for e in data["examples"]] == [4, 9]  # n_examples = 2
    assert data["examples"][0]["tokens"] == meta[0]["tokens"]  # tokens round-trip, markup included


def test_patterns_are_one_byte_per_weight_in_the_order_heads_js_reads():
    _, data, _, patterns = _page()
    for example in data["examples"]:
        for variant in ("pretrained", "finetuned"):
            want = patterns[variant][f"doc{example['doc_id']}"].astype(np.float32)
            raw = np.frombuffer(base64.b64decode(example[variant]), dtype=np.uint8)
            assert raw.size == want.size
            np.testing.assert_allclose(raw.reshape(want.shape) / 255, want, atol=0.5 / 255 + 1e-6)
    assert encode(np.array([0.0, 1.0, 0.5, 1.2, -0.1])) == base64.b64encode(bytes([0, 255, 128, 255, 0])).decode()


def test_no_text_of_the_study_injects_markup():
    page, data, _, _ = _page()
    assert HOSTILE not in page and "</script> &" not in page
    assert "<title>Attention patterns: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;!--</title>" in page
    assert page.count("</script>") == 2  # the data element and the page's script, nothing from the data
    assert "<!--" not in page.split("<body>")[1]  # inside the JSON it is \u003c!--
    assert data["title"] == HOSTILE
    assert "http://" not in page and "https://" not in page  # nothing fetched at view time
