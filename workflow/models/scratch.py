"""Transformers built from a config to be trained from scratch (model source ``scratch``).

`model_config` turns a ``models.<name>.scratch`` block (a model type of the family table, layers,
width, heads, MLP width, positions) into the keyword arguments of that family's transformers
config, so config validation knows the model's depth, width and positions before it exists.
`init_folder` saves the untrained model (with its LM head: masked for encoders, causal for decoders)
and a word-level tokenizer over the corpus's vocabulary as a `save_pretrained` folder; that folder
is step 0 of training and the tokenizer of every later stage.

Positions: ``learned`` is the family's own table (rotary families have none). ``2d`` factorises the
learned table of a board's cells, as the seed study does: the position of the cell in row i and
column j is ``row[i] + column[j]`` (two trained tables of ``board_dim`` rows), and the first token
and anything past the board keep free rows of their own. The saved model holds the materialised
table, so any transformers user loads it as an ordinary model of its family.
"""

from __future__ import annotations

import numpy as np

from workflow.models.families import FAMILIES, MODEL_TYPES

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
PAD, UNK, CLS, SEP, MASK = range(5)
ENCODERS = ("bert", "roberta", "distilbert", "modernbert")
# families whose positions are a learned absolute table starting at 0 (the `2d` option's)
LEARNED_POSITIONS = {
    "bert": "position_embeddings",
    "distilbert": "position_embeddings",
    "gpt2": "wpe",
    "gpt_neo": "wpe",
}
ROTARY = ("gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "modernbert")
WORD_LEVEL_REFUSED = ("qwen2",)  # AutoTokenizer forces Qwen2Tokenizer, which rebuilds the tokenizer as byte-level BPE
OFFSET = 1  # the first token ([CLS], also the decoders' BOS) sits before the board's cells


def objective(model_type: str) -> str:
    """masked (encoders) or causal (decoders)."""
    return "masked" if model_type in ENCODERS else "causal"


def config_kwargs(
    model_type: str,
    layers: int,
    width: int,
    heads: int,
    vocab: int,
    positions: int,
    kv_heads: int | None = None,
    d_mlp: int | None = None,
    pad_id: int | None = PAD,
    bos_id: int = CLS,
    eos_id: int = SEP,
) -> dict:
    """AutoConfig.for_model keyword arguments of a `model_type` model of this shape."""
    d_mlp = d_mlp or 4 * width
    ids = {"vocab_size": vocab, "pad_token_id": pad_id, "bos_token_id": bos_id, "eos_token_id": eos_id}
    gqa = {
        "hidden_size": width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads or heads,
        "head_dim": width // heads,
        "intermediate_size": d_mlp,
        "max_position_embeddings": positions,
    }
    plain = {**gqa, "num_key_value_heads": None, "head_dim": None}
    own = {
        "bert": plain,
        "distilbert": {"dim": width, "n_layers": layers, "n_heads": heads, "hidden_dim": d_mlp},
        "modernbert": {**plain, "cls_token_id": bos_id, "sep_token_id": eos_id},
        "gpt2": {"n_embd": width, "n_layer": layers, "n_head": heads, "n_positions": positions, "n_inner": d_mlp},
        "gpt_neo": {
            "hidden_size": width,
            "num_layers": layers,
            "num_heads": heads,
            "intermediate_size": d_mlp,
            "attention_types": [[["global", "local"], layers // 2]] if layers % 2 == 0 else [[["global"], layers]],
            "max_position_embeddings": positions,
        },
        "gpt_neox": plain,
    }
    kwargs = {**ids, **own.get(model_type, gqa)}
    if model_type == "roberta":  # RoBERTa reserves pad_id + 1 positions
        kwargs = {**plain, **ids, "max_position_embeddings": positions + (pad_id or 0) + 1}
    return {k: v for k, v in kwargs.items() if v is not None or k == "pad_token_id"}


# each family's dropout probabilities (config keys), all set to the scratch block's `dropout`
DROPOUT_KEYS = {
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "distilbert": ("dropout", "attention_dropout", "seq_classif_dropout"),
    "modernbert": ("attention_dropout", "embedding_dropout", "mlp_dropout"),
    "gpt2": ("resid_pdrop", "embd_pdrop", "attn_pdrop"),
    "gpt_neo": ("resid_dropout", "embed_dropout", "attention_dropout"),
    "gpt_neox": ("attention_dropout", "hidden_dropout"),
}


def dropout_kwargs(model_type: str, p: float) -> dict:
    """Every dropout probability of a family's config (rotary decoders have attention dropout only)."""
    return dict.fromkeys(DROPOUT_KEYS.get(model_type, ("attention_dropout",)), p)


def n_positions(spec: dict, board_cells: int) -> int:
    """Positions the model needs: the first token, the cells, the closing token (encoders)."""
    return max(spec.get("max_length") or 0, board_cells + 2)


def model_config(spec: dict, vocab: list[str], board_cells: int) -> dict:
    """config.json of a scratch model as a dict (model_type included), without building it."""
    s = spec["scratch"]
    kwargs = config_kwargs(
        s["family"],
        s["layers"],
        s["d_model"],
        s["heads"],
        len(SPECIALS) + len(vocab),
        n_positions(spec, board_cells),
        s.get("kv_heads"),
        s.get("d_mlp"),
    )
    kwargs |= dropout_kwargs(s["family"], s.get("dropout", 0.0))
    head = "ForMaskedLM" if objective(s["family"]) == "masked" else "ForCausalLM"
    return {"model_type": s["family"], "architectures": [f"Scratch{head}"], **kwargs}


def check(spec: dict, where: str) -> list[str]:
    """Problems with a scratch block, naming the key."""
    s, out = spec["scratch"], []
    if s["d_model"] % s["heads"]:
        out.append(f"{where}.scratch.heads: d_model {s['d_model']} is not a multiple of {s['heads']} heads")
    if s.get("kv_heads") and s["heads"] % s["kv_heads"]:
        out.append(
            f"{where}.scratch.kv_heads: {s['heads']} heads are not a multiple of {s['kv_heads']} key/value heads"
        )
    if s.get("kv_heads") and not FAMILIES[MODEL_TYPES[s["family"]]].grouped_query:
        out.append(f"{where}.scratch.kv_heads: family {s['family']} has no grouped-query attention")
    if s["family"] in WORD_LEVEL_REFUSED:
        out.append(
            f"{where}.scratch.family: transformers' AutoTokenizer loads a {s['family']} tokenizer as its own "
            "byte-level BPE class, which drops a word-level board vocabulary; use qwen3 or llama instead"
        )
    if s["positions"] == "2d" and s["family"] not in LEARNED_POSITIONS:
        out.append(
            f"{where}.scratch.positions: 2d factorises a learned absolute position table; "
            f"{s['family']} has none (use one of {', '.join(LEARNED_POSITIONS)}, or positions: learned)"
        )
    return out


def tokenizer(vocab: list[str], model_type: str, max_length: int):
    """A word-level fast tokenizer: one id per board token, split on spaces; [CLS] opens every input
    ([CLS] ... [SEP] for encoders), [MASK] for the masked objective, [PAD] to pad."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(SPECIALS + list(vocab))}
    backend = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    single = "[CLS] $A [SEP]" if model_type in ENCODERS else "[CLS] $A"
    pair = "[CLS] $A [SEP] $B [SEP]" if model_type in ENCODERS else "[CLS] $A $B"
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)]
    )
    names = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    names |= {"mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"}
    return PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=max_length, **names)


def build(config: dict, seed: int):
    """The untrained model (with its LM head) of a `model_config` dict."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    cfg = AutoConfig.for_model(config["model_type"], **kwargs)
    torch.manual_seed(seed)
    head = AutoModelForMaskedLM if objective(config["model_type"]) == "masked" else AutoModelForCausalLM
    return head.from_config(cfg)


def init_folder(spec: dict, vocab: list[str], board_cells: int, out_dir: str) -> dict:
    """Save the untrained model and its tokenizer in `out_dir` (a save_pretrained folder)."""
    config = model_config(spec, vocab, board_cells)
    model = build(config, spec["scratch"]["seed"])
    tok = tokenizer(vocab, config["model_type"], n_positions(spec, board_cells))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return config


def position_table(model):
    """The learned absolute position embedding of a model, or None."""
    for name, module in model.named_modules():
        if name.split(".")[-1] in LEARNED_POSITIONS.values():
            return name, module
    return None


def factorise_positions(model, board_dim: int) -> None:
    """Make the position table of the board's cells row + column (trainable tables, in place).

    Position OFFSET + i * board_dim + j (cell in row i, column j) becomes row[i] + column[j]; other
    positions keep free rows. The table's own parameter is left unused, so the optimizer trains the
    factors. `materialised_state_dict` gives the plain table for saving."""
    import torch
    from torch.nn.utils import parametrize

    found = position_table(model)
    if found is None:
        raise ValueError("this model has no learned absolute position table to factorise")
    _, table = found
    n, d = table.weight.shape
    cells = board_dim * board_dim
    if OFFSET + cells > n:
        raise ValueError(f"{n} positions cannot hold a {board_dim}x{board_dim} board after the first token")
    std = float(table.weight.detach().std())

    class Factorised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(0)
            self.free = torch.nn.Parameter(table.weight.detach().clone())
            self.row = torch.nn.Parameter(torch.randn(board_dim, 1, d, generator=g) * std / 2**0.5)
            self.column = torch.nn.Parameter(torch.randn(1, board_dim, d, generator=g) * std / 2**0.5)

        def forward(self, _original):
            grid = (self.row + self.column).reshape(cells, d)
            return torch.cat([self.free[:OFFSET], grid, self.free[OFFSET + cells :]])

    parametrize.register_parametrization(table, "weight", Factorised(), unsafe=True)


def materialised_state_dict(model) -> dict:
    """The model's state dict with any factorised position table written out as a plain table."""
    state = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
    found = position_table(model)
    if found is not None and hasattr(found[1], "parametrizations"):
        state[f"{found[0]}.weight"] = found[1].weight.detach().clone()
    return state


def snapshot_steps(total: int, count: int) -> list[int]:
    """`count` steps from 1 to `total`, evenly spaced on a log scale (fewer where they coincide);
    the last is `total`."""
    if total <= 0:
        return []
    steps = np.unique(np.round(np.geomspace(1, total, max(count, 1))).astype(int))
    return [int(s) for s in steps if 1 <= s <= total]
