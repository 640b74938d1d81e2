"""Does an existing checkpoint fit its base? Architecture, depth, width and tokenizer, read from the
files of both (config.json, tokenizer.json / vocab.txt / vocab.json, tokenizer_config.json) before
any job starts. No torch or transformers import: config validation calls this on every start.

Both variants of a study read the same tokens table (made with the base's tokenizer), so a
checkpoint must map every token to the same id, and open and close inputs with the same special
tokens. The end-of-sequence and padding tokens may differ (instruct models often end turns with
their own token); they do not change how the study's inputs are tokenized.
"""

from __future__ import annotations

import json
from pathlib import Path

from workflow.models import families
from workflow.models import sources as model_sources

# special tokens that shape the tokens of an input; eos and pad are free to differ
INPUT_SPECIALS = ("bos_token", "cls_token", "sep_token", "mask_token", "unk_token")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


def source_file(source: str, name: str) -> Path | None:
    """File `name` of a resolved source (a local folder or a Hugging Face id), or None if it has none."""
    folder = Path(source)
    if folder.is_dir():
        path = folder / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(source, name)
    if isinstance(cached, str):
        return Path(cached)
    if model_sources.hub_offline():
        return None
    try:
        return Path(hf_hub_download(source, name))
    except Exception:  # no such file in the repository
        return None


def _json(source: str, name: str) -> dict | None:
    path = source_file(source, name)
    return json.loads(path.read_text()) if path else None


def vocabulary(source: str) -> dict[str, int]:
    """token -> id of a tokenizer's vocabulary, added tokens included."""
    tok = _json(source, "tokenizer.json")
    if tok is not None:
        vocab = tok["model"].get("vocab") or {}
        if isinstance(vocab, list):  # Unigram: [token, score] pairs in id order
            vocab = {piece: i for i, (piece, _) in enumerate(vocab)}
        out = dict(vocab)
        out.update({t["content"]: t["id"] for t in tok.get("added_tokens", [])})
        return out
    plain = _json(source, "vocab.json")
    if plain is not None:
        return plain
    path = source_file(source, "vocab.txt")
    if path is not None:
        return {line: i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines())}
    raise model_sources.SourceError(f"{source}: no tokenizer.json, vocab.json or vocab.txt to read the vocabulary from")


def special_tokens(source: str) -> dict[str, str | None]:
    """The input-side special tokens (bos, cls, sep, mask, unk) of a tokenizer."""
    cfg = {**(_json(source, "special_tokens_map.json") or {}), **(_json(source, "tokenizer_config.json") or {})}

    def content(value):
        return value.get("content") if isinstance(value, dict) else value

    return {name: content(cfg.get(name)) for name in INPUT_SPECIALS}


def has_chat_template(source: str) -> bool:
    cfg = _json(source, "tokenizer_config.json") or {}
    return bool(cfg.get("chat_template")) or any(source_file(source, f) for f in CHAT_TEMPLATE_FILES)


def _shape(model_config: dict) -> dict:
    """The architecture keys a checkpoint must share with its base."""
    get = model_config.get
    return {
        "model_type": get("model_type"),
        "layers": model_sources.n_layers(model_config),
        "d_model": model_sources.d_model(model_config),
        "heads": families.n_heads(model_config),
        "kv_heads": get("num_key_value_heads"),
        "d_mlp": get("intermediate_size") or get("n_inner") or get("hidden_dim"),
        "vocab_size": get("vocab_size"),
    }


def mismatches(base: str, checkpoint: str) -> list[str]:
    """What differs between a base and a checkpoint (resolved sources): an empty list if it fits."""
    problems = []
    a = _shape(model_sources.read_model_config(base))
    b = _shape(model_sources.read_model_config(checkpoint))
    for key in a:
        if a[key] != b[key]:
            problems.append(f"{key} {b[key]!r} differs from the base's {a[key]!r}")
    if problems and a["model_type"] != b["model_type"]:
        return problems  # another architecture: the tokenizer comparison says nothing more
    va, vb = vocabulary(base), vocabulary(checkpoint)
    if va != vb:
        only_b = sorted(set(vb) - set(va), key=vb.get)
        only_a = sorted(set(va) - set(vb), key=va.get)
        moved = sorted((t for t in set(va) & set(vb) if va[t] != vb[t]), key=va.get)
        parts = [f"{len(vb)} tokens vs the base's {len(va)}"]
        if only_b:
            parts.append(f"{len(only_b)} not in the base's (e.g. {only_b[:3]})")
        if only_a:
            parts.append(f"{len(only_a)} of the base's missing (e.g. {only_a[:3]})")
        if moved:
            parts.append(f"{len(moved)} with other ids (e.g. {moved[:3]})")
        problems.append("tokenizer vocabulary differs: " + "; ".join(parts))
    sa, sb = special_tokens(base), special_tokens(checkpoint)
    for name in INPUT_SPECIALS:
        if sa[name] != sb[name]:
            problems.append(f"tokenizer {name} {sb[name]!r} differs from the base's {sa[name]!r}")
    return problems
