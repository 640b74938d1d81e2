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


LOAD_DEFAULTS = {"dtype": "float32", "device_map": None}
OPTIONS = dict(LOAD_DEFAULTS)  # this process's load options: a stage's `--load` sets them (`use_options`)


def use_options(options: dict | None) -> None:
    """Load every model of this process with `options` (a model's ``load`` config)."""
    OPTIONS.clear()
    OPTIONS.update({**LOAD_DEFAULTS, **(options or {})})


def load_kwargs(attention: str | None = None) -> dict:
    """`from_pretrained` keyword arguments of this process's `OPTIONS` (a model's config key
    ``models.<name>.load``): ``dtype`` (float32, bfloat16, float16: the weights' dtype) and
    ``device_map`` (e.g. ``auto``: spread the model over the visible cards, via accelerate);
    `attention` picks the attention implementation (``eager`` returns attention weights)."""
    import torch

    kwargs = {"dtype": getattr(torch, OPTIONS["dtype"])}
    if OPTIONS["device_map"]:
        kwargs["device_map"] = OPTIONS["device_map"]
    if attention:
        kwargs["attn_implementation"] = attention
    return kwargs


def _placed(model, device):
    """`model` on `device`, unless a device_map has placed it already; eval mode, no KV cache."""
    model.config.use_cache = False  # decoders would build a key/value cache nobody reads
    if not OPTIONS["device_map"]:
        model = model.to(device or "cpu")
    return model.eval()


def load_base_model(source: str, device=None, attention: str | None = None):
    """The transformer body (BertModel, LlamaModel, ...) in eval mode."""
    from transformers import AutoModel

    return _placed(AutoModel.from_pretrained(source, **load_kwargs(attention)), device)


def load_classifier(source: str, n_labels: int, pad_id: int | None = None, device=None):
    """A sequence classifier (eval mode, as `from_pretrained` gives it); decoders classify from the
    last token that is not `pad_id`."""
    from transformers import AutoModelForSequenceClassification

    # a checkpoint that is itself a classifier of another label set gets a fresh head of this one
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=n_labels, ignore_mismatched_sizes=True, **load_kwargs()
    )
    if model.config.pad_token_id is None:  # decoders find the last real token by pad id
        model.config.pad_token_id = pad_id
    return _placed(model, device)


def lm_class(kind: str):
    """transformers' auto class of a causal (next-token) or masked LM."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM


def load_lm(source: str, device=None, kind: str = "causal", body: str | None = None):
    """The language model of a checkpoint (`kind`: ``causal`` or ``masked``), in eval mode.

    With `body` (a fine-tuned classifier folder, which has no LM head), the LM is the
    checkpoint's head on that body: every weight of the body is replaced by the fine-tuned
    one; the head keeps the checkpoint's weights, unless it is tied to the embeddings, when it
    follows the fine-tuned embeddings as the model itself would."""
    from transformers import AutoModel

    model = lm_class(kind).from_pretrained(source, **load_kwargs())
    if body:
        from workflow.models.sources import resolve_weights

        tuned = AutoModel.from_pretrained(resolve_weights(body), **load_kwargs())
        # the classifier's body may hold parts the LM does not use (BERT's pooler): only missing weights fail
        missing, _ = model.base_model.load_state_dict(tuned.state_dict(), strict=False)
        missing = [k for k in missing if "position_ids" not in k]
        if missing:
            raise ValueError(f"{body}: its body does not match {source} (missing {missing})")
        del tuned
    return _placed(model, device)


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
