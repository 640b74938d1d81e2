"""Loading tokenizers and models onto a device (CUDA when present, else CPU)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def pick_device() -> torch.device:  # noqa: F821 (torch is imported lazily)
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        return f"cuda ({torch.cuda.get_device_name(device)}, CUDA_VISIBLE_DEVICES={visible!r})"
    return f"cpu ({torch.get_num_threads()} threads)"


def load_tokenizer(source: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:  # GPT-2 has none; padding is masked out everywhere
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pad_token_id(source: str) -> int:
    """The id padding uses for this model, from its config (no tokenizer load: that costs ~3 s).

    Equals `load_tokenizer(source).pad_token_id`: the config's pad id, else its end-of-text id
    (GPT-2 has no pad token), else 0. Padding is masked out everywhere; GPT-2's classifier
    uses the id to find the last real token.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def num_labels(folder: str | Path) -> int:
    """Classes of a saved sequence classifier (its config's id2label)."""
    return len(json.loads((Path(folder) / "config.json").read_text())["id2label"])


def load_base_model(source: str, device=None):
    """The transformer body (BertModel, GPT2Model, ...) in eval mode."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source)
    model.config.use_cache = False  # GPT-2 would build a key/value cache nobody reads
    return model.to(device or "cpu").eval()


def load_classifier(source: str, n_labels: int, pad_id: int | None = None, device=None):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=n_labels)
    if model.config.pad_token_id is None:  # GPT-2 finds the last real token by pad id
        model.config.pad_token_id = pad_id
    model.config.use_cache = False
    return model.to(device or "cpu")


def load_lm(source: str, device=None):
    """The causal language model of a source (GPT-2 family), in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source)
    model.config.use_cache = False
    return model.to(device or "cpu").eval()


def autocast_dtype(setting: str | bool, device):
    """The dtype of bf16 autocast, or None for float32.

    `setting`: ``bfloat16`` / True (always), ``float32`` / False (never), or ``auto``:
    bf16 where the device runs it natively (CUDA with bf16; CPUs with AVX512-BF16 or AMX).
    On a CPU without it, emulated bf16 is many times slower than float32.
    """
    import torch

    if setting in (False, "false", "float32"):
        return None
    if setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        return torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else None
    return torch.bfloat16
