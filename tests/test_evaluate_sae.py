"""Stage `evaluate_sae` with known answers: a lossless SAE recovers all the loss; a splice replaces exactly
what a capture reads."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from tests.conftest import colour_words, make_tiny_bert, make_tiny_gpt2, save_classifier
from tests.sae_helpers import bare_sae
from tests.tiny_models import make_tiny
from workflow.analysis.splices import zeros
from workflow.models import loading
from workflow.models.classifier import classifier_layer
from workflow.models.hooks import Capture, Splice
from workflow.models.sites import hook_name
from workflow.stages import evaluate_sae, extract, tokens
from workflow.store.activations import ActivationSet


def _lossless_relu_sae(d: int, folder, layer: int):
    """W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x exactly."""
    sae = bare_sae("relu", d, 2 * d)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.W_dec.copy_(torch.cat([eye, -eye], 0))
    sae.save(
        folder,
        {
            "hook_name": hook_name("resid_post", layer),
            "study": {"site": "resid_post", "layer": layer, "variant": "finetuned"},
        },
    )
    return folder


MAKERS = {
    "bert": make_tiny_bert,
    "gpt2": make_tiny_gpt2,
    "llama": functools.partial(make_tiny, "llama"),  # untied LM head: it must come from the checkpoint
    "distilbert": functools.partial(make_tiny, "distilbert"),  # a masked-LM head
}
LM_KIND = {"bert": None, "gpt2": "causal", "llama": "causal", "distilbert": "masked"}


def _classifier_study(tmp_path, family):
    """A tiny classifier folder, its test tokens and activation set at resid_post L1."""
    src = MAKERS[family](tmp_path / "model")
    model = loading.load_classifier(str(src), 2, loading.load_tokenizer(str(src)).pad_token_id)
    with torch.no_grad():  # a random head barely reacts; a large one makes the loss depend on the input
        classifier_layer(model).weight.normal_(0, 20.0, generator=torch.Generator().manual_seed(0))
    save_classifier(model, src, tmp_path / "clf")
    colour_words(tmp_path / "test.parquet", 40)
    tokens.run(str(tmp_path / "test.parquet"), str(tmp_path / "clf"), 32, str(tmp_path / "tokens.parquet"))
    extract.run(
        str(tmp_path / "clf"),
        str(tmp_path / "tokens.parquet"),
        [("resid_post", 1)],
        str(tmp_path / "acts"),
        {"model": "tiny", "variant": "finetuned"},
        dtype="float32",
    )
    return tmp_path / "clf", tmp_path / "tokens.parquet", tmp_path / "acts" / "resid_post" / "L1"


CFG = {"max_tokens": None, "batch_rows": 100, "dense_threshold": 0.1, "max_docs": None, "batch_size": 8}


@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "distilbert"])
def test_lossless_sae_recovers_all_the_loss(tmp_path, family):
    clf, tokens, acts = _classifier_study(tmp_path, family)
    d = ActivationSet(acts).d_model
    sae_dir = _lossless_relu_sae(d, tmp_path / "sae", 1)
    kind = LM_KIND[family]
    lm = {"source": str(tmp_path / "model"), "kind": kind, "body": str(clf)} if kind else None
    result = evaluate_sae.run(str(sae_dir), str(acts), str(tokens), str(clf), lm, CFG)
    assert result["fvu"] < 1e-10 and result["explained_variance"] > 1 - 1e-10
    assert result["cosine"] == pytest.approx(1.0) and result["l2_ratio"] == pytest.approx(1.0)
    assert result["l0"] == pytest.approx(d, abs=0.5)  # one of each +/- pair fires (exact zeros aside)
    task = result["downstream"]["task"]
    assert task["loss_spliced"] == pytest.approx(task["loss_clean"], abs=1e-5)
    assert task["loss_zero"] != pytest.approx(task["loss_clean"], abs=1e-4)
    assert task["loss_recovered"] == pytest.approx(1.0, abs=1e-3) and task["kl"] == pytest.approx(0.0, abs=1e-6)
    assert task["kl_zero"] > 0 and task["kl_recovered"] == pytest.approx(1.0, abs=1e-4)
    if kind:
        lm_result = result["downstream"]["lm"]
        assert lm_result["kind"] == kind and lm_result["n_tokens"] > 0
        assert lm_result["loss_recovered"] == pytest.approx(1.0, abs=1e-3)
        assert lm_result["kl"] == pytest.approx(0.0, abs=1e-6) and lm_result["kl_recovered"] == pytest.approx(1.0)
    else:
        assert "lm" not in result["downstream"]
    saved = json.loads((sae_dir / "eval.json").read_text())
    assert saved["downstream"]["task"]["n_docs"] == 40
    from safetensors.torch import load_file

    sparsity = load_file(str(sae_dir / "sparsity.safetensors"))["sparsity"]
    assert sparsity.shape == (2 * d,) and float(sparsity.max()) <= 0


@pytest.mark.parametrize("family", ["bert", "gpt2"])
@pytest.mark.parametrize("site,layer", [("resid_post", 0), ("resid_post", 2), ("attn_out", 1), ("mlp_out", 2)])
def test_splice_replaces_exactly_what_capture_reads(tmp_path, family, site, layer):
    src = (make_tiny_bert if family == "bert" else make_tiny_gpt2)(tmp_path / "m")
    model = loading.load_base_model(str(src))
    ids = torch.randint(5, 100, (2, 7))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        clean = model(**inputs).last_hidden_state
        with Splice(model, site, layer, lambda a: a):  # identity: nothing changes
            same = model(**inputs).last_hidden_state
        seen = {}

        def record_and_zero(a):
            seen["a"] = a.clone()
            return zeros(a)

        with Splice(model, site, layer, record_and_zero):
            ablated = model(**inputs).last_hidden_state
        with Capture(model, [(site, layer)], stop=False) as cap:
            captured = cap.run(**inputs)[(site, layer)]
    torch.testing.assert_close(same, clean)
    torch.testing.assert_close(seen["a"], captured)  # the splice point is the capture point
    assert not torch.allclose(ablated, clean)


def test_an_sae_that_missed_its_sparsity_target_is_named_with_what_to_change():
    from workflow.sae.metrics import l0_warning

    jump = l0_warning({"architecture": "jumprelu", "target_l0": 20}, 408.0)
    assert (
        jump.startswith("L0 408.0 on the test tokens is 1940% above the recipe's target_l0 20")
        and "l0_coefficient" in jump
    )
    batch = l0_warning({"architecture": "batchtopk", "k": 16}, 8.2)
    assert "49% below the recipe's k 16" in batch and "calibration_batches" in batch
    assert l0_warning({"architecture": "topk", "k": 16}, 13.0) is None  # within 25%
    assert l0_warning({"architecture": "relu", "target_l0": None}, 300.0) is None  # no target
