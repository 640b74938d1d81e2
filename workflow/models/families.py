"""The family table: what differs between architectures, in one place.

One `Family` per architecture says, as attribute paths, where a loaded model
keeps what the study reads and writes:

- ``blocks``: the ModuleList of transformer blocks, from the body (``base_model``);
- inside each block, the module whose output is ``attn_out`` and ``mlp_out``
  (what the sublayer adds to the residual stream: for Gemma's sandwich norms,
  the output of the post-sublayer norm, as TransformerLens' ``hook_attn_out``),
  the self-attention core that returns ``(output, weights)`` under eager
  attention, and the output projection W_O, whose input is every query head's
  output, concatenated (head ablation patches it);
- where the norms sit (``norm``: ``post`` = BERT's LayerNorm after each residual
  add; ``pre`` = one norm before each sublayer; ``sandwich`` = Gemma's norms
  before and after each sublayer) and the final norm after the last block;
- ``parallel``: attention and MLP both read the block's input and their outputs
  are added together (GPT-NeoX with ``use_parallel_residual``, the Pythia default);
- the classifier head and the token it reads (``pooled``: ``first`` = [CLS];
  ``last`` = the last non-padding token, how transformers' decoders classify);
- the language-model head a checkpoint may carry (``lm``: ``causal`` next-token
  or ``masked`` masked-token) and whether inputs open with a BOS token;
- ``linear``: every linear layer of a block (dotted paths), and ``lora_targets``,
  the ones LoRA adapts by default (the attention projections).

Head counts come from the loaded config (`heads`): query heads, KV heads
(grouped-query attention) and head size. A head is a query head; in a model with
grouped-query attention several query heads share one key/value head, and
ablating a query head leaves the shared key/value head (and so its sibling query
heads) untouched.

`MODEL_TYPES` maps a config.json ``model_type`` to its family. No torch import:
`locate` only walks attributes of a loaded model.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

from workflow.models.sources import SourceError


@dataclass(frozen=True)
class Blocks:
    """Where the sites of one loaded model live."""

    embed_out: object  # module whose output (BERT) or block-1 input (the rest) is layer 0
    blocks: list
    attn_out: list  # per block: module whose output is attn_out
    mlp_out: list
    embed_is_block_input: bool
    attention: list  # per block: the self-attention core, returning (heads concatenated, weights)
    head_out: list  # per block: the output projection W_O; its input is every head's output, concatenated
    block_owner: object  # the module holding the blocks' ModuleList ...
    block_attr: str  # ... under this attribute name
    final_norm: object  # the norm after the last block, or None


@dataclass(frozen=True)
class Family:
    """One architecture; attribute paths are dotted, from the body (`blocks`, `embeddings`,
    `final_norm`) or from one block (`attn_out`, `mlp_out`, `attention`, `head_out`). The
    defaults describe a pre-norm decoder (GPT-2's names); `ENCODER` holds an encoder's."""

    name: str
    model_types: tuple[str, ...]  # config.json model_type values of this family
    blocks: str
    head_out: str
    attn_out: str = "attn"
    mlp_out: str = "mlp"
    attention: str = "attn"
    encoder: bool = False  # bidirectional attention (False: causal decoder)
    norm: str = "pre"  # "post", "pre" or "sandwich"
    final_norm: str | None = None
    pooled: str = "last"  # the token the sequence classifier reads: "first" or "last"
    lm: str = "causal"  # the LM head a checkpoint of the family may carry: "causal" or "masked"
    prepend_bos: bool = False  # inputs open with a BOS-like token ([CLS], <s>, <bos>): the tokens stage makes sure
    tied_default: bool = True  # tie_word_embeddings when config.json does not say
    embeddings: str | None = None  # module whose output is layer 0; None: block 1's input
    parallel_key: str | None = None  # config attribute that turns on a parallel block
    transformer_lens: str | None = None  # TransformerLens' name of the family, where it has one
    grouped_query: bool = False  # config's num_key_value_heads may be fewer than the query heads
    linear: tuple[str, ...] = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # a block's linear layers
    lora_targets: tuple[str, ...] = ("c_attn", "attn.c_proj")  # default LoRA targets: the attention projections

    @property
    def causal(self) -> bool:
        return not self.encoder

    def unknown_targets(self, targets) -> list[str]:
        """LoRA target module names that match none of a block's linear layers (peft matches a name
        against the end of each module's dotted path)."""
        return [t for t in targets if not any(p == t or p.endswith("." + t) for p in self.linear)]

    def parallel(self, config) -> bool:
        """Attention and MLP read the same block input (GPT-NeoX / GPT-J style)."""
        return bool(self.parallel_key and getattr(config, self.parallel_key, False))

    def locate(self, base_model) -> Blocks:
        owner_path, _, attr = self.blocks.rpartition(".")
        owner = operator.attrgetter(owner_path)(base_model) if owner_path else base_model
        layers = list(getattr(owner, attr))

        def each(path: str) -> list:
            return [operator.attrgetter(path)(b) for b in layers]

        embed = operator.attrgetter(self.embeddings)(base_model) if self.embeddings else layers[0]
        return Blocks(
            embed_out=embed,
            blocks=layers,
            attn_out=each(self.attn_out),
            mlp_out=each(self.mlp_out),
            embed_is_block_input=self.embeddings is None,
            attention=each(self.attention),
            head_out=each(self.head_out),
            block_owner=owner,
            block_attr=attr,
            final_norm=operator.attrgetter(self.final_norm)(base_model) if self.final_norm else None,
        )


ENCODER = {"encoder": True, "norm": "post", "pooled": "first", "lm": "masked", "prepend_bos": True}


def _llama_like(name: str, model_types: tuple[str, ...], tl: str, tied: bool = False, bos: bool = True, **kw):
    """Pre-norm decoders with RMSNorm, rotary positions, a gated MLP and grouped-query attention."""
    return Family(
        name,
        model_types,
        "layers",
        "self_attn.o_proj",
        attention="self_attn",
        final_norm="norm",
        prepend_bos=bos,
        tied_default=tied,
        transformer_lens=tl,
        grouped_query=True,
        linear=(*(f"self_attn.{p}_proj" for p in "qkvo"), *(f"mlp.{p}_proj" for p in ("gate", "up", "down"))),
        lora_targets=tuple(f"{p}_proj" for p in "qkvo"),
        **{"attn_out": "self_attn", **kw},
    )


# Gemma: what a sublayer adds is the output of its post-norm
SANDWICH = {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm", "norm": "sandwich"}
_TABLE = [
    Family(
        "bert",
        ("bert", "roberta"),
        "encoder.layer",
        "attention.output.dense",
        attn_out="attention.output.dense",
        mlp_out="output.dense",
        attention="attention.self",
        embeddings="embeddings",
        transformer_lens="bert",
        linear=(*(f"attention.self.{p}" for p in ("query", "key", "value")), "attention.output.dense")
        + ("intermediate.dense", "output.dense"),
        lora_targets=("query", "key", "value", "attention.output.dense"),
        **ENCODER,
    ),
    Family(
        "distilbert",
        ("distilbert",),
        "transformer.layer",
        "attention.out_lin",
        attn_out="attention.out_lin",
        mlp_out="ffn",
        attention="attention",
        embeddings="embeddings",
        linear=(*(f"attention.{p}_lin" for p in ("q", "k", "v", "out")), "ffn.lin1", "ffn.lin2"),
        lora_targets=tuple(f"{p}_lin" for p in ("q", "k", "v", "out")),
        **ENCODER,
    ),
    # classifier_pooling "cls" (the default) reads the first token; "mean" pools every real one
    Family(
        "modernbert",
        ("modernbert",),
        "layers",
        "attn.Wo",
        linear=("attn.Wqkv", "attn.Wo", "mlp.Wi", "mlp.Wo"),
        lora_targets=("Wqkv", "attn.Wo"),
        **{**ENCODER, "norm": "pre", "final_norm": "final_norm"},
    ),
    Family("gpt2", ("gpt2",), "h", "attn.c_proj", final_norm="ln_f", transformer_lens="gpt2"),
    Family(
        "gpt_neo",
        ("gpt_neo",),
        "h",
        "attn.attention.out_proj",
        attention="attn.attention",
        final_norm="ln_f",
        transformer_lens="gpt-neo",
        linear=(*(f"attn.attention.{p}_proj" for p in ("q", "k", "v", "out")), "mlp.c_fc", "mlp.c_proj"),
        lora_targets=tuple(f"{p}_proj" for p in ("q", "k", "v", "out")),
    ),
    Family(
        "gpt_neox",
        ("gpt_neox",),
        "layers",
        "attention.dense",
        attn_out="attention",
        attention="attention",
        final_norm="final_layer_norm",
        tied_default=False,
        parallel_key="use_parallel_residual",
        transformer_lens="pythia",
        linear=("attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h"),
        lora_targets=("query_key_value", "attention.dense"),
    ),
    _llama_like("llama", ("llama",), "llama"),
    _llama_like("mistral", ("mistral",), "mistral"),
    _llama_like("qwen2", ("qwen2",), "qwen2", bos=False),
    _llama_like("qwen3", ("qwen3",), "qwen3", bos=False),
    _llama_like("gemma2", ("gemma2",), "gemma-2", tied=True, **SANDWICH),
    _llama_like("gemma3", ("gemma3_text",), "gemma-3", tied=True, **SANDWICH),
]
FAMILIES = {f.name: f for f in _TABLE}
MODEL_TYPES = {t: f.name for f in _TABLE for t in f.model_types}  # config.json model_type -> family


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


def family_of(model) -> Family:
    """The family of a loaded model (its body or any head model)."""
    return FAMILIES[model_family({"model_type": model.config.model_type})]


def locate(base_model) -> Blocks:
    """Where the blocks and sites of a loaded transformer body are."""
    return family_of(base_model).locate(base_model)


HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "n_heads")


def n_heads(model_config) -> int:
    """Query heads per block, from a config dict or a transformers config."""
    get = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key, None)
    for key in HEAD_KEYS:
        if get(key) is not None:
            return int(get(key))
    raise SourceError(f"config names no head count ({' / '.join(HEAD_KEYS)})")


@dataclass(frozen=True)
class Heads:
    query: int  # query heads per block (what the study calls a head)
    kv: int  # key/value heads per block (fewer than `query` under grouped-query attention)
    size: int  # width of one head's output


def heads(model_config) -> Heads:
    """Query heads, key/value heads and head size of a transformers config."""
    query = n_heads(model_config)
    grouped = FAMILIES[MODEL_TYPES[model_config.model_type]].grouped_query
    kv = (getattr(model_config, "num_key_value_heads", None) if grouped else None) or query
    width = getattr(model_config, "hidden_size", None)
    size = getattr(model_config, "head_dim", None) or width // query
    return Heads(query, int(kv), int(size))


def lm_kind(model_config: dict) -> str | None:
    """The language-model head a checkpoint carries, from its config.json: ``causal``, ``masked``
    or None. A decoder whose unembedding is tied to its embeddings always has its head (the
    body's embeddings are the head); otherwise the checkpoint's architectures must name one
    (``...ForCausalLM``, ``...LMHeadModel``, ``...ForMaskedLM``, ``...ForPreTraining``)."""
    fam = FAMILIES[model_family(model_config)]
    names = model_config.get("architectures") or []
    if fam.lm == "causal":
        tied = model_config.get("tie_word_embeddings", fam.tied_default)
        if tied or any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
            return "causal"
        return None
    if any(n.endswith(("ForMaskedLM", "ForPreTraining")) for n in names):
        return "masked"
    return None
