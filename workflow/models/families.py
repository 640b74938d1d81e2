"""The family table: what differs between architectures, in one place.

A family says where a model's blocks and sites are (`locate`), which token its
sequence classifier reads (``pooled``: ``first`` = [CLS] for BERT, ``last`` =
the last real token for GPT-2), whether its attention is causal, whether it has
a language-model head whose next-token loss the SAE and head stages measure,
and whether its inputs open with a BOS-like token (SAELens' ``prepend_bos``).
`MODEL_TYPES` maps a config.json ``model_type`` to its family. No torch import:
`locate` only walks attributes of a loaded model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workflow.models.sources import SourceError


@dataclass(frozen=True)
class Blocks:
    """Where the sites of one loaded model live."""

    embed_out: object  # module whose output (BERT) or block-0 input (GPT-2) is layer 0
    blocks: list
    attn_out: list  # per block: module whose output is attn_out
    mlp_out: list
    embed_is_block_input: bool
    attention: list  # per block: the self-attention core, returning (heads concatenated, weights)
    head_out: list  # per block: the output projection W_O; its input is every head's output, concatenated
    block_owner: object  # the module holding the blocks' ModuleList ...
    block_attr: str  # ... under this attribute name


def _bert_blocks(base_model) -> Blocks:
    layers = list(base_model.encoder.layer)
    return Blocks(
        embed_out=base_model.embeddings,
        blocks=layers,
        attn_out=[b.attention.output.dense for b in layers],
        mlp_out=[b.output.dense for b in layers],
        embed_is_block_input=False,
        attention=[b.attention.self for b in layers],
        head_out=[b.attention.output.dense for b in layers],
        block_owner=base_model.encoder,
        block_attr="layer",
    )


def _gpt2_blocks(base_model) -> Blocks:
    layers = list(base_model.h)
    return Blocks(
        embed_out=layers[0],
        blocks=layers,
        attn_out=[b.attn for b in layers],
        mlp_out=[b.mlp for b in layers],
        embed_is_block_input=True,
        attention=[b.attn for b in layers],
        head_out=[b.attn.c_proj for b in layers],
        block_owner=base_model,
        block_attr="h",
    )


@dataclass(frozen=True)
class Family:
    name: str
    locate: Callable[[object], Blocks]
    pooled: str  # the token the sequence classifier reads: "first" or "last"
    causal: bool  # attention sees only earlier tokens
    lm_head: bool  # the checkpoint carries a language-model head (next-token loss is measured)
    prepend_bos: bool  # inputs open with a BOS-like token ([CLS])


FAMILIES = {
    "bert": Family("bert", _bert_blocks, pooled="first", causal=False, lm_head=False, prepend_bos=True),
    "gpt2": Family("gpt2", _gpt2_blocks, pooled="last", causal=True, lm_head=True, prepend_bos=False),
}
MODEL_TYPES = {"bert": "bert", "roberta": "bert", "gpt2": "gpt2"}  # config.json model_type -> family


def model_family(model_config: dict) -> str:
    """Family name of a config.json (a dict); an unknown model_type names the supported ones."""
    model_type = model_config.get("model_type", "")
    if model_type not in MODEL_TYPES:
        raise SourceError(f"model_type {model_type!r} is not supported; supported: {', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r} is not known (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def locate(base_model) -> Blocks:
    """Where the blocks and sites of a loaded transformer body are."""
    return FAMILIES[model_family({"model_type": base_model.config.model_type})].locate(base_model)


def n_heads(model_config) -> int:
    """Attention heads per block, from a config dict or a transformers config."""
    get = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key, None)
    for key in ("num_attention_heads", "n_head"):
        if get(key) is not None:
            return int(get(key))
    raise SourceError("config names no head count (num_attention_heads / n_head)")
