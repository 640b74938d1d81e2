"""Stage `lm_compare`: both variants' LM losses and the per-token KL between their predictions, checked
against a direct computation, on a tiny causal LM and a tiny masked LM."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch

from tests.conftest import tokens_table
from tests.tiny_models import make_tiny
from workflow.models import loading
from workflow.models.lm import mean_loss
from workflow.stages import lm_compare
from workflow.store.files import read_json
from workflow.store.tokens import read_documents

CFG = {"max_docs": None, "batch_size": 8, "n_top": 5, "seed": 0}


def _perturbed(base, folder, kind: str, scale: float = 0.05):
    """A copy of `base` with noise on every weight: the stand-in for a fine-tuned checkpoint."""
    model = loading.lm_class(kind).from_pretrained(base)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p) * p.std().clamp_min(1e-3))
    model.save_pretrained(folder)
    for f in base.glob("*token*"):
        shutil.copy(f, folder / f.name)
    return folder


def _spec(source, kind):
    return {"source": str(source), "kind": kind, "body": None}


@pytest.mark.parametrize(("model_type", "kind"), [("gpt2", "causal"), ("bert", "masked")])
def test_kl_and_losses_match_a_direct_computation(model_type, kind, data_dir, tmp_path):
    base = make_tiny(model_type, tmp_path / "base")
    tuned = _perturbed(base, tmp_path / "tuned", kind)
    tokens = tokens_table(data_dir, base, tmp_path)
    specs = {"pretrained": _spec(base, kind), "finetuned": _spec(tuned, kind)}
    summary = lm_compare.run(specs, str(tokens), CFG, str(tmp_path / "out"))
    table = pl.read_parquet(tmp_path / "out" / "tokens.parquet")
    docs = read_documents(tokens)
    device = torch.device("cpu")
    tokenizer = loading.load_tokenizer(str(base))
    for variant, source in (("pretrained", base), ("finetuned", tuned)):
        model = loading.load_lm(str(source), device, kind)
        expected = mean_loss(model, docs, kind, 4, tokenizer.pad_token_id, tokenizer.mask_token_id, device)
        assert summary[variant]["loss"] == pytest.approx(expected["loss"], rel=1e-4)
        assert len(table) == expected["n_tokens"]
    # one document by hand: KL(P_ft || P_pre) at each scored position
    first = int(docs.doc_ids[0])
    ids = torch.from_numpy(docs.token_ids[0].astype(np.int64))[None]
    rows = table.filter(pl.col("doc_id") == first).sort("pos")
    pos = rows["pos"].to_numpy()
    if kind == "masked":
        ids = ids.clone()
        ids[0, pos.astype(np.int64)] = tokenizer.mask_token_id
        at = pos
    else:
        at = pos - 1  # the logits at t predict token t + 1
    with torch.inference_mode():
        logp = {v: loading.load_lm(str(s), device, kind)(input_ids=ids).logits[0, at].log_softmax(-1)
                for v, s in (("pretrained", base), ("finetuned", tuned))}  # fmt: skip
    kl = (logp["finetuned"].exp() * (logp["finetuned"] - logp["pretrained"])).sum(-1)
    np.testing.assert_allclose(rows["kl"].to_numpy(), kl.numpy(), rtol=1e-3, atol=1e-5)
    assert summary["kl"]["mean"] > 0 and summary["kl"]["max"] == pytest.approx(float(table["kl"].max()), rel=1e-5)
    assert summary["top_tokens"][0]["kl"] == pytest.approx(summary["kl"]["max"], rel=1e-5)
    assert read_json(tmp_path / "out" / "lm.json")["n_tokens"] == len(table)
    assert (tmp_path / "out" / "kl.png").stat().st_size > 0
    documents = pl.read_parquet(tmp_path / "out" / "documents.parquet")
    assert documents["mean_kl"].is_sorted(descending=True) and documents["n_tokens"].sum() == len(table)


def test_a_model_against_itself_has_no_kl(data_dir, tmp_path):
    base = make_tiny("llama", tmp_path / "base")
    tokens = tokens_table(data_dir, base, tmp_path)
    summary = lm_compare.run({v: _spec(base, "causal") for v in ("pretrained", "finetuned")}, str(tokens), CFG,
                             str(tmp_path / "out"))  # fmt: skip
    assert summary["kl"]["max"] < 1e-5 and summary["agreement"] == 1.0
    assert summary["pretrained"]["loss"] == pytest.approx(summary["finetuned"]["loss"], rel=1e-6)
