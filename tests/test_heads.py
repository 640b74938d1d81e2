"""Attention heads with known answers: hooks read the model's own weights, a built previous-token head is
typed as such, a head with a zero output projection costs nothing to ablate, batched ablation equals the
naive one-forward-per-head loop, and the stage and its summary on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

from tests.conftest import colour_words, make_tiny_bert, make_tiny_gpt2, save_classifier
from tests.references import naive_head_effects
from workflow.analysis import ablation
from workflow.analysis.attention import DEFAULT_THRESHOLDS, AttentionWeights, PatternStats, head_type, head_types
from workflow.models import loading
from workflow.models.classifier import classifier_layer
from workflow.stages import heads, tokens
from workflow.store.tokens import Documents, batches


def _docs(n: int, seed: int = 0, lo: int = 4, hi: int = 12, n_labels: int = 2, vocab: int = 900) -> Documents:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, vocab, rng.integers(lo, hi)) for _ in range(n)]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in ids])]).astype(np.int64)
    special = []
    for t in ids:
        s = np.zeros(len(t), bool)
        s[[0, -1]] = True  # [CLS] ... [SEP]
        special.append(s)
    return Documents(ids, rng.integers(0, n_labels, n), offsets, special)


def _classifier(tmp_path, family: str, layers: int = 2, scale: float = 5.0):
    make = make_tiny_bert if family == "bert" else make_tiny_gpt2
    src = make(tmp_path / family, layers=layers)
    model = loading.load_classifier(str(src), 2, 0).eval()
    with torch.no_grad():  # a larger head makes the loss depend on the input
        classifier_layer(model).weight.normal_(0, scale, generator=torch.Generator().manual_seed(0))
    return src, model


def _inputs(docs: Documents, pad_id: int = 0) -> dict:
    return next(batches(docs, len(docs.token_ids), pad_id))[1]


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_hooks_reproduce_the_models_own_attention_weights(tmp_path, family):
    _, model = _classifier(tmp_path, family)
    model.set_attn_implementation("eager")
    inputs = _inputs(_docs(5))
    with torch.no_grad(), AttentionWeights(model.base_model) as attn:
        own = model(**inputs, output_attentions=True).attentions
    assert len(own) == len(attn.weights) == 2
    for mine, theirs in zip(attn.weights, own):
        assert mine.shape == theirs.shape == (5, 4, inputs["input_ids"].shape[1], inputs["input_ids"].shape[1])
        torch.testing.assert_close(mine, theirs)
    if family == "bert":  # and they equal softmax(QK^T / sqrt(d) + mask) computed here from block 1's input
        body = model.base_model
        with torch.no_grad():
            x = body.embeddings(input_ids=inputs["input_ids"])
            core = body.encoder.layer[0].attention.self
            q = core.query(x).view(5, -1, 4, 8).transpose(1, 2)
            k = core.key(x).view(5, -1, 4, 8).transpose(1, 2)
            scores = q @ k.transpose(-1, -2) / math.sqrt(8)
            scores = scores.masked_fill(~inputs["attention_mask"].bool()[:, None, None, :], float("-inf"))
        torch.testing.assert_close(attn.weights[0], scores.softmax(-1), atol=1e-5, rtol=1e-4)
    else:  # causal: nothing above the diagonal
        assert float(attn.weights[0].triu(1).abs().max()) == 0.0


def _previous_token_bert(tmp_path, alpha: float = 30.0):
    """A tiny BERT whose head 0 of block 1 attends to the previous token by construction: word embeddings are
    zero, so block 1 reads position vectors h_i only; W_K maps h_j to e_j, W_Q maps h_i to alpha * e_(i-1)."""
    src = make_tiny_bert(tmp_path / "built", layers=1)
    model = loading.load_base_model(str(src))
    emb = model.embeddings
    n_pos = dh = 8  # one key direction per position: as many positions as the head has dimensions
    with torch.no_grad():
        emb.word_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        h = emb(input_ids=torch.zeros(1, n_pos, dtype=torch.long))[0]  # (n_pos, d): the LayerNormed positions
        pinv = torch.linalg.pinv(h.T)  # (n_pos, d): pinv @ h_j = e_j
        core = model.encoder.layer[0].attention.self
        eye = torch.eye(n_pos)
        shift = torch.zeros(n_pos, n_pos)
        shift[torch.arange(n_pos - 1), torch.arange(1, n_pos)] = 1.0  # column i = e_(i-1)
        for w in (core.query, core.key):
            w.weight.zero_()
            w.bias.zero_()
        core.key.weight[:dh] = eye @ pinv
        core.query.weight[:dh] = alpha * (shift @ pinv)
    return model, n_pos


def test_a_head_built_to_attend_to_the_previous_token_is_typed_previous(tmp_path):
    model, n_pos = _previous_token_bert(tmp_path)
    model.set_attn_implementation("eager")
    docs = _docs(20, lo=3, hi=n_pos + 1)
    stats = PatternStats(1, 4)
    inputs = _inputs(docs)
    special = torch.zeros_like(inputs["attention_mask"], dtype=torch.bool)
    with torch.no_grad(), AttentionWeights(model) as attn:
        model(**inputs)
    stats.update(0, attn.weights[0], inputs["attention_mask"], special, causal=False)
    result = stats.result()
    assert result["previous"][0, 0] > 0.95, result["previous"][0]
    assert abs(result["distance"][0, 0] - 1.0) < 0.6  # query 0 has no previous token: it looks everywhere
    types = head_types(result, DEFAULT_THRESHOLDS)
    assert types[0, 0] == "previous"
    assert all(t != "previous" for t in types[0, 1:])  # the other heads attend uniformly (zero Q and K)
    assert all(t == "broad" for t in types[0, 1:])


def test_pattern_statistics_match_a_direct_computation():
    rng = np.random.default_rng(0)
    b, h, t = 3, 2, 6
    logits = torch.from_numpy(rng.normal(size=(b, h, t, t)))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 3 + [0] * 3])
    special = torch.zeros(b, t, dtype=torch.bool)
    special[0, 5] = special[1, 3] = special[2, 2] = True  # each document's [SEP]
    weights = logits.masked_fill(~mask.bool()[:, None, None, :], float("-inf")).softmax(-1)
    stats = PatternStats(1, h)
    stats.update(0, weights, mask, special, causal=False)
    got = stats.result()
    expect = {k: np.zeros(h) for k in ("entropy", "distance", "self", "previous", "first", "separator")}
    counts = dict.fromkeys(expect, 0)
    for d in range(b):
        n = int(mask[d].sum())
        for q in range(n):
            a = weights[d, :, q, :n].numpy()
            expect["entropy"] += -(a * np.log(a)).sum(-1)
            expect["distance"] += (a * np.abs(q - np.arange(n))).sum(-1)
            expect["self"] += a[:, q]
            expect["first"] += a[:, 0]
            expect["separator"] += a[:, n - 1]
            for key in ("entropy", "distance", "self", "first", "separator"):
                counts[key] += 1
            if q > 0:
                expect["previous"] += a[:, q - 1]
                counts["previous"] += 1
    for key in expect:
        np.testing.assert_allclose(got[key][0], expect[key] / counts[key], rtol=1e-9, err_msg=key)


def test_head_types_follow_the_documented_rules():
    base = {
        "entropy": 1.0,
        "entropy_norm": 0.5,
        "distance": 5.0,
        "self": 0.1,
        "previous": 0.1,
        "next": 0.1,
        "first": 0.1,
        "separator": float("nan"),
    }
    t = DEFAULT_THRESHOLDS
    assert head_type(base, t) == "mixed"
    assert head_type({**base, "first": 0.7, "self": 0.6}, t) == "first"  # the largest share wins
    assert head_type({**base, "separator": 0.55}, t) == "separator"
    assert head_type({**base, "distance": 1.5}, t) == "local"
    assert head_type({**base, "entropy_norm": 0.9}, t) == "broad"
    assert head_type({**base, "self": 0.5}, t) == "self"


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_batched_ablation_equals_one_forward_per_head(tmp_path, family):
    _, model = _classifier(tmp_path, family, layers=3)
    docs = _docs(10)
    means = ablation.head_means(model, docs, 4, 0, "cpu")
    clean, batched = ablation.head_effects(model, docs, ablation.task_measure, ["zero", "mean"], means, 4, 20, 0, "cpu")
    clean_naive, naive = naive_head_effects(model, docs, ablation.task_measure, ["zero", "mean"], means, 4, 0, "cpu")
    np.testing.assert_allclose(clean, clean_naive, rtol=1e-6)
    np.testing.assert_allclose(batched, naive, rtol=1e-5, atol=1e-5)
    assert batched.shape == (2, 3, 4, 2)
    assert np.abs(batched[..., 0] - clean[0]).max() > 1e-3  # ablations do change the loss


def test_a_head_with_zero_output_projection_has_zero_ablation_effect(tmp_path):
    _, model = _classifier(tmp_path, "bert", layers=2)
    with torch.no_grad():  # block 2, head 1: its columns of W_O are zero, so it writes nothing
        model.base_model.encoder.layer[1].attention.output.dense.weight[:, 8:16] = 0.0
    docs = _docs(12)
    means = ablation.head_means(model, docs, 4, 0, "cpu")
    clean, ablated = ablation.head_effects(model, docs, ablation.task_measure, ["zero", "mean"], means, 4, 64, 0, "cpu")
    np.testing.assert_allclose(ablated[:, 1, 1, :], np.broadcast_to(clean, (2, 2)), rtol=1e-6, atol=1e-6)
    others = np.delete(ablated[..., 0].reshape(2, -1), 4 + 1, axis=1)
    assert np.abs(others - clean[0]).min() > 0  # every other head changes the loss


def test_mean_ablation_writes_the_heads_mean_output(tmp_path):
    """A head whose output is the same at every token is unchanged by mean ablation (its mean is its value)."""
    _, model = _classifier(tmp_path, "bert", layers=1)
    with torch.no_grad():  # head 0 of block 1: zero value weights -> it outputs its value bias everywhere
        core = model.base_model.encoder.layer[0].attention.self
        core.value.weight[:8] = 0.0
    docs = _docs(8)
    means = ablation.head_means(model, docs, 4, 0, "cpu")
    np.testing.assert_allclose(means[0][0].numpy(), core.value.bias[:8].detach().numpy(), rtol=1e-5, atol=1e-6)
    clean, ablated = ablation.head_effects(model, docs, ablation.task_measure, ["mean"], means, 4, 64, 0, "cpu")
    np.testing.assert_allclose(ablated[0, 0, 0], clean, rtol=1e-5)


def test_lm_ablation_equals_naive_on_gpt2(tmp_path):
    from transformers import AutoModelForCausalLM

    src = make_tiny_gpt2(tmp_path / "lm", layers=2)
    lm = AutoModelForCausalLM.from_pretrained(str(src)).eval()
    docs = _docs(6)
    clean, batched = ablation.head_effects(lm, docs, ablation.lm_measure, ["zero"], None, 3, 12, 0, "cpu")
    _, naive = naive_head_effects(lm, docs, ablation.lm_measure, ["zero"], None, 3, 0, "cpu")
    np.testing.assert_allclose(batched, naive, rtol=1e-5)
    assert clean[1] == sum(len(t) - 1 for t in docs.token_ids)  # every next token counted once


def _stage_inputs(tmp_path, family: str, seed: int):
    """A tiny classifier folder (its body seeded differently per variant) and a tokens table."""
    make = make_tiny_bert if family == "bert" else make_tiny_gpt2
    src = make(tmp_path / f"src-{family}", layers=2)
    model = loading.load_classifier(str(src), 2, loading.load_tokenizer(str(src)).pad_token_id)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    folder = save_classifier(model, src, tmp_path / f"clf-{family}-{seed}")
    colour_words(tmp_path / "test.parquet", 30)
    tokens_path = tmp_path / f"tokens-{family}.parquet"
    tokens.run(str(tmp_path / "test.parquet"), str(folder), 32, str(tokens_path))
    return folder, tokens_path


CFG = {
    "max_docs": 20,
    "modes": ["zero", "mean"],
    "batch_size": 8,
    "max_rows": 64,
    "pattern_docs": 4,
    "pattern_max_tokens": 32,
    "types": {},
    "seed": 0,
}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_stage_writes_statistics_ablations_and_patterns(tmp_path, family):
    pre, tokens = _stage_inputs(tmp_path, family, 1)
    ft, _ = _stage_inputs(tmp_path, family, 2)
    lm = {name: {"source": str(f), "kind": "causal", "body": None} for name, f in (("pre", pre), ("ft", ft))}
    lm = lm if family == "gpt2" else {"pre": None, "ft": None}
    out = {}
    for name, folder in (("pre", pre), ("ft", ft)):
        out[name] = tmp_path / f"heads-{name}"
        summary = heads.run(str(tokens), str(folder), lm[name], family, CFG, str(out[name]))
        assert summary["n_docs"] == 20 and summary["n_layers"] == 2 and summary["n_heads"] == 4
    table = pl.read_parquet(out["ft"] / "heads.parquet")
    assert len(table) == 8 and set(table["type"]) <= {
        "self",
        "previous",
        "next",
        "first",
        "separator",
        "local",
        "broad",
        "mixed",
    }
    if family == "gpt2":
        assert table["separator"].null_count() == 8  # GPT-2 adds no [SEP]
        assert table["next"].max() == 0.0  # causal: nothing attends ahead
    ablation = pl.read_parquet(out["ft"] / "ablation.parquet")
    measures = {"task", "lm"} if family == "gpt2" else {"task"}
    assert set(ablation["measure"]) == measures and len(ablation) == 8 * 2 * len(measures)
    clean = json.loads((out["ft"] / "heads.json").read_text())["clean"]["task"]["loss"]
    np.testing.assert_allclose(
        (ablation.filter(pl.col("measure") == "task")["loss"] - clean).to_numpy(),
        ablation.filter(pl.col("measure") == "task")["delta_loss"].to_numpy(),
        atol=1e-9,
    )
    from safetensors.numpy import load_file

    examples = json.loads((out["ft"] / "patterns.json").read_text())
    patterns = load_file(str(out["ft"] / "patterns.safetensors"))
    assert len(examples) == 4
    for ex in examples:
        p = patterns[f"doc{ex['doc_id']}"].astype(np.float32)
        assert p.shape == (2, 4, len(ex["tokens"]), len(ex["tokens"]))
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=5e-3)  # every query row is a distribution


def test_documents_longer_than_the_pattern_limit_are_shown_cut_not_dropped(tmp_path):
    """No document is as short as pattern_max_tokens: the shortest ones are stored cut to it, as the
    full document's attention among its first tokens (causal: each query row still sums to 1)."""
    from safetensors.numpy import load_file

    clf, tokens = _stage_inputs(tmp_path, "gpt2", 1)
    full, cut = tmp_path / "full", tmp_path / "cut"
    heads.run(str(tokens), str(clf), None, "gpt2", CFG, str(full))
    heads.run(str(tokens), str(clf), None, "gpt2", {**CFG, "pattern_max_tokens": 3}, str(cut))
    examples = json.loads((cut / "patterns.json").read_text())
    assert len(examples) == 4 and all(ex["cut"] and len(ex["tokens"]) == 3 for ex in examples)
    whole = {ex["doc_id"]: ex for ex in json.loads((full / "patterns.json").read_text())}
    full_p, cut_p = load_file(str(full / "patterns.safetensors")), load_file(str(cut / "patterns.safetensors"))
    for ex in examples:
        p = cut_p[f"doc{ex['doc_id']}"].astype(np.float32)
        assert p.shape == (2, 4, 3, 3)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=5e-3)
        if ex["doc_id"] in whole:  # the same document stored whole: its top-left corner
            assert ex["tokens"] == whole[ex["doc_id"]]["tokens"][:3]
            np.testing.assert_allclose(p, full_p[f"doc{ex['doc_id']}"].astype(np.float32)[:, :, :3, :3], atol=1e-3)


@pytest.mark.workflow
def test_a_killed_heads_job_reruns_to_the_same_heads(kill_study, tmp_path):
    from tests.kills import KillRun

    folder = "results/analysis/bert/news/heads/finetuned"
    clean, killed, _ = KillRun(kill_study, "heads", f"{folder}/heads.json", tmp_path).run(seed=5)
    KillRun.assert_same(clean, killed, folder)
