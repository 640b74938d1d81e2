"""The family table on a tiny random model of every supported model_type: every site reads what
the model computes, the sublayer sites add up to the residual stream by the family's own formula,
the forward stops after the deepest block needed, attention patterns are distributions, batched
head ablation equals one head at a time, and fine-tuning each family gets above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.references import naive_head_effects
from tests.tiny_models import DECODERS, ENCODERS, KV_HEADS, MODEL_TYPES, make_tiny
from workflow.analysis import ablation
from workflow.analysis.attention import AttentionWeights
from workflow.models import loading
from workflow.models.families import FAMILIES, family_of, heads, lm_kind, locate
from workflow.models.families import MODEL_TYPES as SUPPORTED
from workflow.models.hooks import Capture
from workflow.models.sources import read_model_config
from workflow.store.tokens import Documents

TEXTS = ["the film was not good at all", "a wonderful plot", "the minister met diplomats at the summit today"]


@pytest.fixture(scope="module", params=MODEL_TYPES)
def tiny(request, tmp_path_factory):
    return make_tiny(request.param, tmp_path_factory.mktemp("families") / request.param, layers=3)


def _inputs(folder):
    tokenizer = loading.load_tokenizer(str(folder))
    return tokenizer(TEXTS, padding=True, return_tensors="pt")


def test_every_listed_model_type_is_in_the_table():
    assert set(SUPPORTED) == set(MODEL_TYPES)
    assert set(FAMILIES) == {"bert", "distilbert", "modernbert", "gpt2", "gpt_neo", "gpt_neox", "llama"} | {
        "mistral",
        "qwen2",
        "qwen3",
        "gemma2",
        "gemma3",
    }


def test_checkpoint_lm_head_is_read_from_config(tiny):
    cfg = read_model_config(str(tiny))
    assert lm_kind(cfg) == ("masked" if cfg["model_type"] in ENCODERS else "causal")
    body_only = {**cfg, "architectures": ["SomethingModel"], "tie_word_embeddings": False}
    assert lm_kind(body_only) is None  # an untied body without its head has no LM head


def test_resid_post_equals_hidden_states_every_layer(tiny):
    body = loading.load_base_model(str(tiny))
    inputs = _inputs(tiny)
    where = locate(body)
    depth = len(where.blocks)
    wanted = [("resid_post", layer) for layer in range(depth + 1)]
    with torch.inference_mode():
        hidden = body(**inputs, output_hidden_states=True).hidden_states
        with Capture(body, wanted, stop=False) as cap:
            captured = cap.run(**inputs)
    mask = inputs["attention_mask"].bool()
    assert len(hidden) == depth + 1
    for layer in range(depth):
        torch.testing.assert_close(captured[("resid_post", layer)][mask], hidden[layer][mask], rtol=0, atol=1e-5)
    last = captured[("resid_post", depth)][mask]
    if where.final_norm is None:  # BERT, DistilBERT: the last hidden state is the last block's output
        torch.testing.assert_close(last, hidden[depth][mask], rtol=0, atol=1e-5)
    else:  # hidden_states[-1] has the final norm applied; the hook reads the block output before it
        with torch.inference_mode():
            normed = where.final_norm(captured[("resid_post", depth)])[mask]
        torch.testing.assert_close(normed, hidden[depth][mask], rtol=0, atol=1e-4)
        assert not torch.allclose(last, hidden[depth][mask], atol=1e-3)
    # stored as float16, the values stay within fp16 rounding of the model's own
    stored = captured[("resid_post", 1)][mask].half().float()
    torch.testing.assert_close(stored, hidden[1][mask], rtol=1e-3, atol=1e-3)


def test_sublayer_sites_add_up_by_the_familys_formula(tiny):
    body = loading.load_base_model(str(tiny))
    fam, where = family_of(body), locate(body)
    wanted = [("resid_post", 1), ("resid_post", 2), ("attn_out", 2), ("mlp_out", 2)]
    with torch.inference_mode(), Capture(body, wanted) as cap:
        c = cap.run(**_inputs(tiny))
    pre, attn, mlp, post = c[("resid_post", 1)], c[("attn_out", 2)], c[("mlp_out", 2)], c[("resid_post", 2)]
    block = where.blocks[1]
    with torch.inference_mode():
        if fam.norm == "post" and fam.name == "bert":  # LayerNorm after each residual add
            expected = block.output.LayerNorm(block.attention.output.LayerNorm(pre + attn) + mlp)
        elif fam.norm == "post":  # DistilBERT
            expected = block.output_layer_norm(block.sa_layer_norm(pre + attn) + mlp)
        else:  # pre-norm and sandwich: plain sums of what each sublayer adds
            expected = pre + attn + mlp
        torch.testing.assert_close(post, expected, rtol=0, atol=1e-5)
        if fam.parallel(body.config):  # GPT-NeoX: the MLP reads the block input, not pre + attn
            torch.testing.assert_close(mlp, block.mlp(block.post_attention_layernorm(pre)), rtol=0, atol=1e-5)
        elif fam.norm in ("pre", "sandwich") and fam.name != "modernbert":
            norm = block.pre_feedforward_layernorm if fam.norm == "sandwich" else _second_norm(block)
            mlp_alone = block.mlp(norm(pre + attn))
            if fam.norm == "sandwich":
                mlp_alone = block.post_feedforward_layernorm(mlp_alone)
            torch.testing.assert_close(mlp, mlp_alone, rtol=0, atol=1e-5)


def _second_norm(block):
    for name in ("ln_2", "post_attention_layernorm"):
        if hasattr(block, name):
            return getattr(block, name)
    raise AssertionError(f"{type(block).__name__}: no second norm")


def test_capture_stops_after_the_deepest_block(tiny):
    body = loading.load_base_model(str(tiny))
    ran = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(locate(body).blocks)]
    try:
        for wanted, blocks in (([("mlp_out", 1)], [0]), ([("resid_post", 2), ("attn_out", 1)], [0, 1])):
            ran.clear()
            with torch.inference_mode(), Capture(body, wanted) as cap:
                cap.run(**_inputs(tiny))
            assert ran == blocks  # the blocks after the deepest one never ran
    finally:
        for h in handles:
            h.remove()


def test_attention_patterns_are_distributions_over_visible_keys(tiny):
    body = loading.load_base_model(str(tiny), attention="eager")
    inputs = _inputs(tiny)
    mask = inputs["attention_mask"].bool()
    with torch.inference_mode(), AttentionWeights(body) as aw:
        body(**inputs)
    assert heads(body.config).query == 4
    for w in aw.weights:
        assert w.shape[1] == 4  # one pattern per query head, also under grouped-query attention
        torch.testing.assert_close(
            w.sum(-1)[mask[:, None, :].expand_as(w.sum(-1))], torch.ones(()).expand(int(mask.sum()) * 4)
        )
        assert float(w[~mask[:, None, None, :].expand_as(w)].abs().max()) < 1e-6  # padding is never a key
        if family_of(body).causal:
            assert float(torch.triu(w, diagonal=1).abs().max()) < 1e-6


def test_grouped_query_families_have_fewer_kv_heads(tiny):
    body = loading.load_base_model(str(tiny))
    h = heads(body.config)
    gqa = body.config.model_type in ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
    assert h.kv == (KV_HEADS if gqa else 4)
    w_o = locate(body).head_out[0]
    assert (getattr(w_o, "in_features", None) or w_o.weight.shape[0]) == h.query * h.size  # GPT-2: Conv1D (in, out)


def _docs(folder, n: int) -> Documents:
    tokenizer = loading.load_tokenizer(str(folder))
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["red", "blue", "green", "day", "film"], rng.integers(3, 8))) for _ in range(n)]
    enc = [tokenizer(t, return_special_tokens_mask=True) for t in texts]
    ids = [np.array(e["input_ids"]) for e in enc]
    return Documents(
        token_ids=ids,
        labels=rng.integers(0, 2, n),
        offsets=np.concatenate([[0], np.cumsum([len(i) for i in ids])]),
        special=[np.array(e["special_tokens_mask"], bool) for e in enc],
        doc_ids=np.arange(n),
    )


def test_batched_head_ablation_equals_one_head_at_a_time(tiny):
    pad_id = loading.load_tokenizer(str(tiny)).pad_token_id
    model = loading.load_classifier(str(tiny), 2, pad_id).eval()
    docs = _docs(tiny, 8)
    means = ablation.head_means(model, docs, 4, pad_id, "cpu")
    modes = ["zero", "mean"]
    clean, batched = ablation.head_effects(model, docs, ablation.task_measure, modes, means, 4, 16, pad_id, "cpu")
    clean_naive, naive = naive_head_effects(model, docs, ablation.task_measure, modes, means, 4, pad_id, "cpu")
    np.testing.assert_allclose(clean, clean_naive, rtol=1e-5)
    np.testing.assert_allclose(batched, naive, rtol=1e-4, atol=1e-5)
    assert np.abs(batched[..., 0] - clean[0]).max() > 1e-4  # ablations change the loss


@pytest.mark.parametrize("model_type", DECODERS)
def test_lm_head_ablation_counts_every_next_token(tmp_path, model_type):
    folder = make_tiny(model_type, tmp_path / model_type)
    lm = loading.load_lm(str(folder))
    pad_id = loading.pad_token_id(str(folder))
    docs = _docs(folder, 4)
    clean, batched = ablation.head_effects(lm, docs, ablation.lm_measure, ["zero"], None, 2, 8, pad_id, "cpu")
    _, naive = naive_head_effects(lm, docs, ablation.lm_measure, ["zero"], None, 2, pad_id, "cpu")
    np.testing.assert_allclose(batched, naive, rtol=1e-4)
    assert clean[1] == sum(len(t) - 1 for t in docs.token_ids)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "distilbert", "bert"])
def test_lm_on_a_finetuned_body_keeps_the_checkpoints_head(tmp_path, model_type):
    """The fine-tuned folder is a classifier (no LM head): its body goes under the checkpoint's head;
    a head tied to the embeddings follows the fine-tuned embeddings."""
    from tests.conftest import save_classifier

    src = make_tiny(model_type, tmp_path / "src")
    clf = loading.load_classifier(str(src), 2, loading.load_tokenizer(str(src)).pad_token_id)
    with torch.no_grad():
        for p in clf.base_model.parameters():
            p.add_(0.1)
    save_classifier(clf, src, tmp_path / "clf")
    kind = "masked" if model_type in ENCODERS else "causal"
    pretrained = loading.load_lm(str(src), kind=kind)
    tuned = loading.load_lm(str(src), kind=kind, body=str(tmp_path / "clf"))
    body = dict(clf.base_model.named_parameters())
    for name, p in tuned.base_model.named_parameters():
        torch.testing.assert_close(p, body[name], rtol=0, atol=0)
    head, head0 = tuned.get_output_embeddings().weight, pretrained.get_output_embeddings().weight
    if model_type == "llama":  # untied: the checkpoint's own head
        torch.testing.assert_close(head, head0, rtol=0, atol=0)
    else:  # tied: the fine-tuned embeddings
        torch.testing.assert_close(head, tuned.get_input_embeddings().weight, rtol=0, atol=0)
        assert not torch.equal(head, head0)


def test_linear_layers_of_a_block_are_the_familys(tiny):
    """The family's `linear` list is every linear layer of a block, so LoRA targets can be checked
    against it before any job (GPT-2's are Conv1D)."""
    from transformers.pytorch_utils import Conv1D

    body = loading.load_base_model(str(tiny))
    fam = family_of(body)
    block = locate(body).blocks[0]
    found = {name for name, m in block.named_modules() if isinstance(m, torch.nn.Linear | Conv1D)}
    assert found == set(fam.linear)
    assert not fam.unknown_targets(fam.lora_targets)
    assert fam.unknown_targets(["q_proj_typo"]) == ["q_proj_typo"]
