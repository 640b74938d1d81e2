"""The explorer on a finished tiny study (conftest's `kill_study`: BERT on news, a TopK SAE at layer 2
of both variants, their diff): the API's answers equal what the models compute directly, bad
requests get a 4xx with a message and the app keeps serving, the page in headless Chromium shows
the API's tokens, features and intervention effects, and nothing is written to the results folder."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import polars as pl
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from starlette.testclient import TestClient

from workflow.explore import cli

ROOT = Path(__file__).resolve().parents[2]
TEXT = "Markets rallied after the central bank cut rates."
WHERE = {"model": "bert", "dataset": "news", "site": "resid_post", "layer": 2, "recipe": "topk"}


def zeroing(feature: int, variant: str = "finetuned") -> dict:
    return {"features": {variant: [{"feature": feature, "mode": "zero"}]}}


@pytest.fixture(scope="module")
def explorer(kill_study):
    results = kill_study / "results"
    before = _listing(results)
    app, catalog = cli.build(results, str(kill_study / "study.yaml"), device="cpu", hosts=["testserver"])
    with TestClient(app) as client:
        yield client, catalog, kill_study
    assert _listing(results) == before, "the explorer wrote to the results folder"


def _listing(folder: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def _direct(catalog, text: str, zero: dict | None = None) -> dict:
    """Tokens, each variant's class probabilities and per-token top-3 features, computed here from the
    saved classifier and SAE folders (not through the engine); `zero`: {variant: feature} zeroed by
    subtracting its decoder row times its code."""
    import torch

    from workflow import sae as sae_lib
    from workflow.models import loading
    from workflow.models.hooks import Capture, Splice

    pair = catalog.pair("bert", "news")
    folders = catalog.sae_folders(pair, "resid_post", 2, "topk")
    tok = loading.load_tokenizer(pair.source["pretrained"])
    ids = tok(text, truncation=True, max_length=pair.max_length)["input_ids"]
    inputs = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    out = {"tokens": tok.convert_ids_to_tokens(ids)}
    for v in ("pretrained", "finetuned"):
        folder = pair.classifier[v]
        model = loading.load_classifier(folder, loading.num_labels(folder), loading.pad_token_id(folder)).eval()
        sae = sae_lib.load(folders[v]).eval()
        with torch.no_grad():
            capture = Capture(model.base_model, [("resid_post", 2)], stop=False)
            with capture:
                probs = model(**inputs).logits.softmax(-1)[0]
            codes = sae.encode(capture.captured[("resid_post", 2)][0])
            row = {"probs": probs.tolist(), "top": codes.topk(3, dim=1)}
            if zero and v in zero:
                f = zero[v]

                def edit(acts, f=f, sae=sae):
                    c = sae.encode(acts[0])[:, f]
                    return acts - (c[:, None] * sae.W_dec[f] / sae.scale)[None]

                with Splice(model.base_model, "resid_post", 2, edit):
                    row["after"] = model(**inputs).logits.softmax(-1)[0].tolist()
        out[v] = row
    return out


def test_the_api_gives_what_the_models_compute(explorer):
    client, catalog, _ = explorer
    answer = client.post("/api/analyse", json={**WHERE, "text": TEXT, "top": 3}).json()
    direct = _direct(catalog, TEXT)
    assert answer["tokens"] == direct["tokens"]
    for v in ("pretrained", "finetuned"):
        got = answer["variants"][v]
        assert list(got["prediction"]["probs"].values()) == pytest.approx(direct[v]["probs"], abs=1e-5)
        values, idx = direct[v]["top"]
        for token, (vals, ids) in enumerate(zip(values.tolist(), idx.tolist())):
            want = [[i, a] for i, a in zip(ids, vals) if a > 0]
            assert [f for f, _ in got["features"][token]] == [f for f, _ in want]
            assert [a for _, a in got["features"][token]] == pytest.approx([a for _, a in want], abs=1e-3)
    # zero the fine-tuned SAE's strongest feature of the first ordinary token: the change equals the direct one
    feature = answer["variants"]["finetuned"]["features"][1][0][0]
    changed = client.post(
        "/api/analyse",
        json={**WHERE, "text": TEXT, "interventions": zeroing(feature)},
    ).json()
    direct = _direct(catalog, TEXT, zero={"finetuned": feature})
    after = changed["variants"]["finetuned"]["after"]["probs"]
    assert list(after.values()) == pytest.approx(direct["finetuned"]["after"], abs=1e-5)
    diff = changed["variants"]["finetuned"]["difference"]["probs"]
    assert list(diff.values()) == pytest.approx(
        [a - b for a, b in zip(direct["finetuned"]["after"], direct["finetuned"]["probs"])], abs=1e-5
    )
    assert "after" not in changed["variants"]["pretrained"]
    # every shown feature's partner is the diff's match
    diff = pl.read_parquet(catalog.pair("bert", "news").diffs[("resid_post", 2, "topk")])
    for v in ("pretrained", "finetuned"):
        shown = {f for token in answer["variants"][v]["features"] for f, _ in token}
        matched = {r["feature"]: r for r in diff.filter(pl.col("side") == v).iter_rows(named=True) if r["partner"] >= 0}
        partners = answer["variants"][v]["partners"]
        assert {int(f) for f in partners} == shown & set(matched)
        for f, p in partners.items():
            assert (p["id"], p["category"]) == (matched[int(f)]["partner"], matched[int(f)]["category"])


def test_a_feature_across_the_text_and_a_heads_attention(explorer):
    client, catalog, _ = explorer
    answer = client.post("/api/analyse", json={**WHERE, "text": TEXT, "top": 1}).json()
    feature = answer["variants"]["pretrained"]["features"][1][0][0]
    asked = {**WHERE, "text": TEXT, "variant": "pretrained", "feature": feature}
    traced = client.post("/api/feature", json=asked).json()
    acts = traced["acts"]["pretrained"]
    assert acts[1] == pytest.approx(answer["variants"]["pretrained"]["features"][1][0][1], abs=1e-3)
    if traced["partner"] is not None:  # the diff matched it: the partner's activations come with it
        assert len(traced["acts"]["finetuned"]) == len(acts)
    att = client.post("/api/attention", json={"model": "bert", "dataset": "news", "layer": 1, "head": 0, "text": TEXT})
    weights = att.json()["weights"]
    for v in ("pretrained", "finetuned"):
        rows = weights[v]
        assert len(rows) == len(answer["tokens"]) and all(sum(r) == pytest.approx(1.0, abs=1e-3) for r in rows)


BAD = [
    ("get", "/results/../study.yaml", None, 404),
    ("get", "/results/%2e%2e/study.yaml", None, 404),
    ("get", "/results//etc/passwd", None, 404),
    ("post", "/api/analyse", {**WHERE, "text": "x" * 5000}, 400),
    ("post", "/api/analyse", {**WHERE, "layer": 7, "text": TEXT}, 404),
    ("post", "/api/analyse", {**WHERE, "recipe": "nope", "text": TEXT}, 404),
    ("post", "/api/analyse", {**WHERE, "model": "gpt9", "text": TEXT}, 404),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "top": 500}, 400),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": zeroing(10**6)}, 400),
    ("post", "/api/feature", {**WHERE, "text": TEXT, "variant": "base", "feature": 0}, 400),
    ("post", "/api/attention", {"model": "bert", "dataset": "news", "layer": 1, "head": 99, "text": TEXT}, 400),
    ("post", "/api/analyse", {**WHERE, "layer": "2", "text": TEXT}, 400),
    ("post", "/api/analyse", {**WHERE, "layer": True, "text": TEXT}, 400),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": zeroing(-1)}, 400),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": []}, 400),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": {"features": []}}, 400),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": {"features": {"finetuned": [1]}}}, 400),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": zeroing(1, "fine-tuned")}, 400),
    (
        "post",
        "/api/analyse",
        {**WHERE, "text": TEXT, "interventions": {"features": {"finetuned": [{"feature": 1}, {"feature": 1}]}}},
        400,
    ),
    (
        "post",
        "/api/analyse",
        {
            **WHERE,
            "text": TEXT,
            "interventions": {"features": {"finetuned": [{"feature": 1, "mode": "clamp", "value": 1e300}]}},
        },
        400,
    ),
    ("post", "/api/analyse", {**WHERE, "text": TEXT, "interventions": {"heads": {"pretrained": [[0, 99]]}}}, 400),
    ("raw", "/api/analyse", b'{"model": "bert", "layer": NaN}', 400),
    ("raw", "/api/analyse", b"[" * 30000 + b"]" * 30000, 400),
    ("form", "/api/analyse", b'{"model": "bert"}', 400),
    ("chunked", "/api/analyse", b"x" * 70000, 413),
    ("host", "/api/study", None, 400),
    ("raw", "/api/analyse", b"{not json", 400),
    ("raw", "/api/analyse", b"[1, 2]", 400),
    ("raw", "/api/analyse", b"x" * 70000, 413),
    ("post", "/api/analyse", {**WHERE}, 400),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_4xx_with_a_message_and_the_app_keeps_serving(explorer, method, path, body, status):
    client, _, _ = explorer
    json_type = {"content-type": "application/json"}
    if method == "get":
        r = client.get(path)
    elif method == "raw":
        r = client.post(path, content=body, headers=json_type)
    elif method == "form":  # what a cross-site form can send without a preflight
        r = client.post(path, content=body, headers={"content-type": "text/plain"})
    elif method == "chunked":  # no content-length: the size is counted as the body arrives
        r = client.post(path, content=iter([body[:1000], body[1000:]]), headers=json_type)
    elif method == "host":  # a page elsewhere, its name rebound to this machine
        r = client.get(path, headers={"host": "127.0.0.1.evil.example:8765"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text and r.json()["error"]
    assert client.post("/api/analyse", json={**WHERE, "text": TEXT}).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_in_a_browser(explorer, tmp_path):
    import uvicorn

    from tests.browser import assert_not_blank, open_browser

    client, _, study = explorer
    app, _ = cli.build(study / "results", str(study / "study.yaml"), device="cpu", hosts=["testserver"])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.1)
        api = client.post("/api/analyse", json={**WHERE, "text": TEXT, "top": 3}).json()
        with open_browser() as page:
            page.goto(base + "/")
            page.fill("#text", TEXT)
            page.click("#go")
            page.wait_for_selector("#results .chip")
            shown = page.eval_on_selector_all("#results .finetuned .chip .tok", "els => els.map(e => e.textContent)")
            assert shown == api["tokens"]
            ids = "els => els.map(e => [...e.querySelectorAll('a.feat')].map(a => +a.dataset.f))"
            feats = page.eval_on_selector_all("#results .finetuned .chip", ids)
            assert feats == [[f for f, _ in t] for t in api["variants"]["finetuned"]["features"]]
            # zero a feature: the change shown is the API's
            feature = api["variants"]["finetuned"]["features"][1][0][0]
            page.click("#interventions summary")
            page.check(f'input.zero[data-v="finetuned"][data-f="{feature}"]')
            page.click("#go")
            page.wait_for_selector('.pred[data-v="finetuned"] .diffpos, .pred[data-v="finetuned"] .diffneg')
            asked = {**WHERE, "text": TEXT, "top": 3, "interventions": zeroing(feature)}
            changed = client.post("/api/analyse", json=asked).json()
            text = page.inner_text('.pred[data-v="finetuned"]')
            for delta in changed["variants"]["finetuned"]["difference"]["probs"].values():
                assert f"{delta:+.4f}" in text.replace("+-", "-"), (delta, text)
            page.click(f'#results .finetuned a.feat[data-f="{feature}"]')
            page.wait_for_selector("#trace p")
            page.click("#attend")
            page.wait_for_selector("#attention table.att")
            shot = tmp_path / "explore.png"
            page.screenshot(path=str(shot), full_page=True)
            assert_not_blank(shot)
            if os.environ.get("STUDY_SAVE_SCREENSHOTS"):  # the README's picture: docs/explore.png
                (ROOT / "docs").mkdir(exist_ok=True)
                (ROOT / "docs/explore.png").write_bytes(shot.read_bytes())
            assert page.errors == []
            outside = [u for u in page.requests if not u.startswith(base)]
            assert outside == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_ablating_a_head_through_the_api_equals_the_direct_ablation(explorer):
    import torch

    from workflow.analysis.ablation import HeadPatch
    from workflow.models import loading
    from workflow.models.families import locate

    client, catalog, _ = explorer
    body = {**WHERE, "text": TEXT, "interventions": {"heads": {"pretrained": [[1, 0]]}}}
    answer = client.post("/api/analyse", json=body).json()["variants"]["pretrained"]
    pair = catalog.pair("bert", "news")
    folder = pair.classifier["pretrained"]
    model = loading.load_classifier(folder, loading.num_labels(folder), loading.pad_token_id(folder)).eval()
    tok = loading.load_tokenizer(pair.source["pretrained"])
    ids = torch.tensor([tok(TEXT, truncation=True, max_length=pair.max_length)["input_ids"]])
    where = locate(model.base_model)
    with torch.no_grad(), HeadPatch(where.head_out[1], model.config.num_attention_heads, [(0, None)]):
        probs = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.softmax(-1)[0]
    assert list(answer["after"]["probs"].values()) == pytest.approx(probs.tolist(), abs=1e-5)
    assert "after" not in client.post("/api/analyse", json={**WHERE, "text": TEXT}).json()["variants"]["pretrained"]


def test_a_crosscoders_latents_and_zeroing_one_on_one_side(explorer):
    """recipe "crosscoder.<name>": one code per token from both variants' activations, shown per variant
    weighted by that side's decoder norm; zeroing a latent on one side moves that side only."""
    import torch

    from workflow.models import loading
    from workflow.models.hooks import Capture, Splice
    from workflow.sae import crosscoder

    client, catalog, study = explorer
    where = {**WHERE, "recipe": "crosscoder.cc"}
    assert any(s["recipe"] == "crosscoder.cc" for s in client.get("/api/study").json()["pairs"][0]["saes"])
    answer = client.post("/api/analyse", json={**where, "text": TEXT, "top": 3}).json()
    pair = catalog.pair("bert", "news")
    cc = crosscoder.load(str(study / "results/crosscoders/bert/news/resid_post/L2/cc"))
    tok = loading.load_tokenizer(pair.source["pretrained"])
    ids = torch.tensor([tok(TEXT, truncation=True, max_length=pair.max_length)["input_ids"]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    models, acts = {}, {}
    for v in ("pretrained", "finetuned"):
        folder = pair.classifier[v]
        models[v] = loading.load_classifier(folder, loading.num_labels(folder), loading.pad_token_id(folder)).eval()
        with torch.no_grad(), Capture(models[v].base_model, [("resid_post", 2)], stop=False) as capture:
            models[v](**inputs)
        acts[v] = capture.captured[("resid_post", 2)][0]
    with torch.no_grad():
        codes = cc.encode(torch.cat([acts["pretrained"], acts["finetuned"]], -1))
        side = cc.side
        w_ft = cc.W_dec[:, side:] / cc.scale[side:]
    weighted = codes * w_ft.norm(dim=1)
    top = weighted.topk(3, dim=1)
    for token, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
        got = answer["variants"]["finetuned"]["features"][token]
        assert [f for f, _ in got] == [i for i, a in zip(idx, vals) if a > 0]
    latent = answer["variants"]["finetuned"]["features"][1][0][0]
    body = {**where, "text": TEXT, "interventions": zeroing(latent)}
    changed = client.post("/api/analyse", json=body).json()["variants"]["finetuned"]["after"]["probs"]
    delta = -codes[:, latent, None] * w_ft[latent]
    with torch.no_grad(), Splice(models["finetuned"].base_model, "resid_post", 2, lambda a: a + delta[None]):
        direct = models["finetuned"](**inputs).logits.softmax(-1)[0].tolist()
    assert list(changed.values()) == pytest.approx(direct, abs=1e-5)
    traced = client.post("/api/feature", json={**where, "text": TEXT, "variant": "finetuned", "feature": latent}).json()
    assert traced["partner"]["id"] == latent and set(traced["acts"]) == {"pretrained", "finetuned"}
