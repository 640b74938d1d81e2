"""Tiny random models of every family in the family table, built in code (no download).

`make_tiny(model_type, folder)` saves a 2-layer, width-64 model with 4 query heads (2
key/value heads where the family has grouped-query attention) and a byte-level BPE
tokenizer trained here on built-in text, as a folder `from_pretrained` loads. Decoders are
saved with their causal-LM head, encoders with their masked-LM head, so every stage that
measures a language-model loss has one. Tokenizers follow their family: encoders wrap
inputs in <s> ... </s> (RoBERTa style); Llama, Mistral and Gemma open with <s> (BOS);
GPT-2, GPT-Neo, GPT-NeoX and Qwen add nothing, and only Qwen and Gemma have a pad token.
"""

from __future__ import annotations

import functools
from pathlib import Path

WIDTH, HEADS, KV_HEADS, HEAD_DIM = 64, 4, 2, 16
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]  # ids 0..4
PAD, BOS, EOS, UNK, MASK = range(5)

ENCODERS = ("bert", "roberta", "distilbert", "modernbert")
DECODERS = ("gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
MODEL_TYPES = ENCODERS + DECODERS
WITH_BOS = ("llama", "mistral", "gemma2", "gemma3_text")
WITH_PAD = ENCODERS + ("qwen2", "qwen3", "gemma2", "gemma3_text")


def config_kwargs(model_type: str, layers: int, vocab: int) -> dict:
    """AutoConfig.for_model keyword arguments of a tiny model of `model_type`."""
    ids = {
        "vocab_size": vocab,
        "pad_token_id": PAD if model_type in WITH_PAD else None,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
    }
    gqa = {
        "hidden_size": WIDTH,
        "num_hidden_layers": layers,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "intermediate_size": 2 * WIDTH,
        "max_position_embeddings": 256,
    }
    own = {
        "bert": {**gqa, "num_key_value_heads": None, "head_dim": None},
        "distilbert": {"dim": WIDTH, "n_layers": layers, "n_heads": HEADS, "hidden_dim": 2 * WIDTH},
        "modernbert": {**gqa, "num_key_value_heads": None, "head_dim": None, "cls_token_id": BOS, "sep_token_id": EOS},
        "gpt2": {"n_embd": WIDTH, "n_layer": layers, "n_head": HEADS, "n_positions": 256},
        "gpt_neo": {
            "hidden_size": WIDTH,
            "num_layers": layers,
            "num_heads": HEADS,
            "attention_types": [[["global", "local"], layers // 2]] if layers % 2 == 0 else [[["global"], layers]],
            "max_position_embeddings": 256,
        },
        "gpt_neox": {**gqa, "num_key_value_heads": None, "head_dim": None},
    }
    kwargs = {**ids, **own.get(model_type, gqa)}
    if model_type == "roberta":
        kwargs = {**own["bert"], **ids, "max_position_embeddings": 258}  # RoBERTa reserves pad_id + 1 positions
    return {k: v for k, v in kwargs.items() if v is not None or k == "pad_token_id"}


@functools.cache
def _bpe():
    from tokenizers import ByteLevelBPETokenizer

    from workflow.datasets import builtin

    texts = [r["text"] for task in builtin.TASKS for r in builtin.generate(task, 300, seed=123)]
    bpe = ByteLevelBPETokenizer(add_prefix_space=True)
    bpe.train_from_iterator(texts, vocab_size=600, min_frequency=1, special_tokens=SPECIALS)
    return bpe


def tokenizer_for(model_type: str):
    """A fast tokenizer with the special tokens and template of `model_type`'s family."""
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = _bpe()._tokenizer.__class__.from_str(_bpe()._tokenizer.to_str())  # a fresh copy
    names = {"eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}
    if model_type in ENCODERS:
        backend.post_processor = TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> $B </s>", special_tokens=[("<s>", BOS), ("</s>", EOS)]
        )
        names |= {"cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}
    elif model_type in WITH_BOS:
        backend.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    else:
        backend.post_processor = None
    if model_type in WITH_PAD:
        names["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=backend, **names)


def make_tiny(model_type: str, folder: Path, layers: int = 2, seed: int = 0, **overrides) -> Path:
    """A random model of `model_type` with its LM head and a tokenizer, saved in `folder`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    tokenizer = tokenizer_for(model_type)
    config = AutoConfig.for_model(model_type, **{**config_kwargs(model_type, layers, len(tokenizer)), **overrides})
    torch.manual_seed(seed)
    head = AutoModelForMaskedLM if model_type in ENCODERS else AutoModelForCausalLM
    head.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
