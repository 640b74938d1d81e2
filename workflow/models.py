"""Loading models and reading activations with forward hooks.

Layer and site grammar (see DESIGN.md): layer L is the output of transformer
block L (1-based); L = 0 is the embedding output, the input of block 1. Sites:

- ``resid_post``: the residual stream after block L (for BERT, after the
  block's final LayerNorm, i.e. what the next block reads);
- ``attn_out``: the attention sublayer's output projection (W_O x + b_O),
  before the residual add;
- ``mlp_out``: the MLP's output projection, before the residual add.

Each maps one-to-one onto a TransformerLens hook name:

>>> hook_name("resid_post", 3)
'blocks.2.hook_resid_post'
>>> hook_name("resid_post", 0)
'blocks.0.hook_resid_pre'
>>> hook_name("mlp_out", 1)
'blocks.0.hook_mlp_out'

Activations are read with forward hooks, not ``output_hidden_states``: that
keeps every layer in memory, and GPT-2's last hidden state has the final
LayerNorm applied. A capture raises `StopForward` after the deepest block it
needs, so the rest of the model is never run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

SITES = ("resid_post", "attn_out", "mlp_out")
FAMILIES = {"bert": "bert", "roberta": "bert", "gpt2": "gpt2"}  # model_type -> family
PACKAGE_PREFIX = "package:"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model")

log = logging.getLogger(__name__)


def hook_name(site: str, layer: int) -> str:
    """TransformerLens name of (site, layer)."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    if layer == 0:
        if site != "resid_post":
            raise ValueError(f"site {site!r} has no layer 0 (the embedding output)")
        return "blocks.0.hook_resid_pre"
    return f"blocks.{layer - 1}.hook_{site}"


# ---------------------------------------------------------------- sources


class SourceError(ValueError):
    """A model source that cannot be resolved; the message names it."""


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
            raise SourceError(f"model source {source!r}: no tokenizer in that folder (one of {', '.join(TOKENIZER_FILES)})")
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


def read_model_config(source: str) -> dict:
    """config.json of a resolved source (local folder or cached / online hub id)."""
    folder = Path(source)
    if folder.is_dir():
        return json.loads((folder / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "config.json")).read_text())


def model_family(model_config: dict) -> str:
    model_type = model_config.get("model_type", "")
    if model_type not in FAMILIES:
        raise SourceError(f"model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)}")
    return FAMILIES[model_type]


def n_layers(model_config: dict) -> int:
    for key in ("num_hidden_layers", "n_layer"):
        if key in model_config:
            return int(model_config[key])
    raise SourceError("config.json names no layer count (num_hidden_layers / n_layer)")


def n_positions(model_config: dict) -> int | None:
    """Longest input the position table allows (None if the config does not say)."""
    for key in ("max_position_embeddings", "n_positions"):
        if key in model_config:
            # RoBERTa reserves padding_idx + 1 positions: 514 in the config, 512 usable
            reserved = model_config.get("pad_token_id", 0) + 1 if model_config.get("model_type") == "roberta" else 0
            return int(model_config[key]) - reserved
    return None


# ---------------------------------------------------------------- loading


def pick_device() -> "torch.device":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')!r})"
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


def load_base_model(source: str, device=None):
    """The transformer body (BertModel, GPT2Model, ...) in eval mode."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source)
    model.config.use_cache = False  # GPT-2 would build a key/value cache nobody reads
    return model.to(device or "cpu").eval()


def load_classifier(source: str, num_labels: int, pad_token_id: int | None = None, device=None):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=num_labels)
    if model.config.pad_token_id is None:  # GPT-2 finds the last real token by pad id
        model.config.pad_token_id = pad_token_id
    model.config.use_cache = False
    return model.to(device or "cpu")


# ---------------------------------------------------------------- hooks


@dataclass(frozen=True)
class Blocks:
    """Where the sites of one architecture live."""

    embed_out: object  # module whose output (BERT) or block-0 input (GPT-2) is layer 0
    blocks: list
    attn_out: list  # per block: module whose output is attn_out
    mlp_out: list
    embed_is_block_input: bool
    attention: list  # per block: the self-attention core, returning (heads concatenated, weights)
    head_out: list  # per block: the output projection W_O; its input is every head's output, concatenated
    block_owner: object  # the module holding the blocks' ModuleList ...
    block_attr: str  # ... under this attribute name


def locate(base_model) -> Blocks:
    model_type = base_model.config.model_type
    family = FAMILIES.get(model_type)
    if family == "bert":
        layers = list(base_model.encoder.layer)
        return Blocks(
            base_model.embeddings,
            layers,
            [b.attention.output.dense for b in layers],
            [b.output.dense for b in layers],
            embed_is_block_input=False,
            attention=[b.attention.self for b in layers],
            head_out=[b.attention.output.dense for b in layers],
            block_owner=base_model.encoder,
            block_attr="layer",
        )
    if family == "gpt2":
        layers = list(base_model.h)
        return Blocks(layers[0], layers, [b.attn for b in layers], [b.mlp for b in layers], embed_is_block_input=True,
                      attention=[b.attn for b in layers], head_out=[b.attn.c_proj for b in layers],
                      block_owner=base_model, block_attr="h")
    raise SourceError(f"model_type {model_type!r} is not supported; supported: {', '.join(FAMILIES)}")


def n_heads(model_config) -> int:
    """Attention heads per block, from a config dict or a transformers config."""
    get = model_config.get if isinstance(model_config, dict) else lambda key: getattr(model_config, key, None)
    for key in ("num_attention_heads", "n_head"):
        if get(key) is not None:
            return int(get(key))
    raise SourceError("config names no head count (num_attention_heads / n_head)")


class StopForward(Exception):
    """Raised from a hook once every wanted activation is captured."""


def _first(output):
    return output[0] if isinstance(output, tuple) else output


class Capture(contextlib.AbstractContextManager):
    """Forward hooks that store the wanted (site, layer) activations of one call.

    ``captured[(site, layer)]`` is a (batch, seq, d_model) tensor after the
    forward; with ``stop=True`` the forward is cut after the deepest block
    needed (call through `run`, which swallows `StopForward`).
    """

    def __init__(self, base_model, wanted: list[tuple[str, int]], stop: bool = True):
        self.model, self.wanted, self.stop = base_model, list(wanted), stop
        self.where = locate(base_model)
        depth = len(self.where.blocks)
        for site, layer in self.wanted:
            hook_name(site, layer)  # validates the pair
            if layer > depth:
                raise ValueError(f"layer {layer} is beyond the model's {depth} blocks")
        self.deepest = max(layer for _, layer in self.wanted)
        self.captured: dict[tuple[str, int], object] = {}
        self._handles = []

    def _save(self, key, tensor, stop_here: bool):
        self.captured[key] = tensor.detach()
        if stop_here and self.stop:
            raise StopForward

    def __enter__(self):
        w = self.where
        for site, layer in self.wanted:
            key = (site, layer)
            stop_here = layer == self.deepest and site == "resid_post"

            def on_output(module, args, output, key=key, stop_here=stop_here):
                self._save(key, _first(output), stop_here)

            def on_block_input(module, args, kwargs, key=key, stop_here=stop_here):
                self._save(key, args[0] if args else kwargs["hidden_states"], stop_here)

            if layer == 0 and w.embed_is_block_input:
                handle = w.embed_out.register_forward_pre_hook(on_block_input, with_kwargs=True)
            elif layer == 0:
                handle = w.embed_out.register_forward_hook(on_output)
            elif site == "resid_post":
                handle = w.blocks[layer - 1].register_forward_hook(on_output)
            else:
                module = (w.attn_out if site == "attn_out" else w.mlp_out)[layer - 1]
                handle = module.register_forward_hook(on_output)
            self._handles.append(handle)
        if self.stop and ("resid_post", self.deepest) not in self.wanted:
            # the deepest wanted site is an inner sublayer: stop once its block ends
            block = w.blocks[max(self.deepest, 1) - 1]
            self._handles.append(block.register_forward_hook(self._raise))
        return self

    @staticmethod
    def _raise(module, args, output):
        raise StopForward

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return False

    def run(self, **inputs) -> dict:
        """Run the model on `inputs`, returning the captured activations."""
        self.captured = {}
        try:
            self.model(**inputs)
        except StopForward:
            pass
        missing = [k for k in self.wanted if k not in self.captured]
        if missing:
            raise RuntimeError(f"hooks did not fire for {missing}")
        return self.captured
