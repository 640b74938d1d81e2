"""Where a model comes from: a folder in an installed package, a local folder or a
Hugging Face id, and what its config.json says (depth, positions). No torch import.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from workflow.store.checksums import check_sizes

PACKAGE_PREFIX = "package:"
# config.json keys of depth and width, by family (GPT-2: n_layer; GPT-Neo: num_layers; DistilBERT: n_layers, dim)
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
WIDTH_KEYS = ("hidden_size", "n_embd", "dim")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")


class SourceError(ValueError):
    """A model source that cannot be resolved; the message names it."""

    user_facing = True  # `python -m workflow` prints the message, not a traceback


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or os.path.exists(source)


def hub_offline() -> bool:
    """True when the Hugging Face Hub cannot be used: marked offline
    (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or not reachable within 3 s."""
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in flags):
        return True
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return False
    except OSError:
        return True


def resolve_source(source: str) -> str:
    """Turn a model source into something `from_pretrained` accepts.

    - ``package:NAME``: a model folder shipped inside an installed Python
      package (``NAME/model``, or ``NAME.get_model_path()``), found without
      importing the package so that config validation stays fast;
    - a local folder (absolute, relative or ``~``) holding ``config.json``;
    - otherwise a Hugging Face model id, taken from the local cache if it is
      there; when offline and not cached, a clear error.
    """
    if source.startswith(PACKAGE_PREFIX):
        name = source[len(PACKAGE_PREFIX) :]
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SourceError(f"model source {source!r}: Python package {name!r} is not installed")
        folder = Path(spec.submodule_search_locations[0]) / "model"
        if not (folder / "config.json").exists():
            folder = Path(__import__(name).get_model_path())
        return str(folder)
    if _looks_like_path(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise SourceError(f"model source {source!r}: folder does not exist")
        if not (folder / "config.json").exists():
            raise SourceError(f"model source {source!r}: no config.json in that folder")
        if not any((folder / f).exists() for f in TOKENIZER_FILES):
            raise SourceError(
                f"model source {source!r}: no tokenizer in that folder (one of {', '.join(TOKENIZER_FILES)})"
            )
        check_sizes(folder)  # a folder the workflow wrote: its files are all there, at their sizes
        return str(folder.resolve())
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        return source
    if hub_offline():
        raise SourceError(
            f"model source {source!r} is a Hugging Face id that is not in the local cache, "
            "and the Hub cannot be reached (offline); download it while online or give a local folder"
        )
    return source


def resolve_weights(source: str) -> str:
    """A source whose weights alone are loaded (a fine-tuned body): a local folder as it is (it needs
    no tokenizer), anything else through `resolve_source`."""
    if Path(source).is_dir():
        check_sizes(source)
        return source
    return resolve_source(source)


def read_model_config(source: str) -> dict:
    """config.json of a resolved source (local folder or cached / online hub id)."""
    folder = Path(source)
    if folder.is_dir():
        return json.loads((folder / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "config.json")).read_text())


def n_layers(model_config: dict) -> int:
    for key in LAYER_KEYS:
        if key in model_config:
            return int(model_config[key])
    raise SourceError(f"config.json names no layer count ({' / '.join(LAYER_KEYS)})")


def n_positions(model_config: dict) -> int | None:
    """Longest input the position table allows (None if the config does not say)."""
    for key in ("max_position_embeddings", "n_positions"):
        if key in model_config:
            # RoBERTa reserves padding_idx + 1 positions: 514 in the config, 512 usable
            reserved = model_config.get("pad_token_id", 0) + 1 if model_config.get("model_type") == "roberta" else 0
            return int(model_config[key]) - reserved
    return None


def d_model(model_config: dict) -> int:
    """Width of the residual stream."""
    for key in WIDTH_KEYS:
        if model_config.get(key):
            return int(model_config[key])
    raise SourceError(f"config.json names no width ({' / '.join(WIDTH_KEYS)})")
