"""Sparse autoencoders: one architecture per module, registered by name.

`ARCHITECTURES` maps a recipe's ``architecture`` (written to cfg.json as
``metadata.architecture``) to the class that implements it; each class names
its typed recipe (`recipe_type`) and the SAELens architecture it is saved as
(``standard``, ``topk``, ``jumprelu``). Modules are imported when first used, so
a stage's code version (`workflow.runner.codehash`) covers only the architecture its
recipe names. Adding an architecture: one module with its recipe and class, its
line here, and its keys in the config schema.

`create` builds an SAE from a recipe, `load` reads a saved folder back (weights
with the input scale folded in).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from workflow.layout import SAE

ARCHITECTURES = {
    "relu": "workflow.sae.relu:ReluSAE",
    "topk": "workflow.sae.topk:TopKSAE",
    "batchtopk": "workflow.sae.batchtopk:BatchTopKSAE",
    "jumprelu": "workflow.sae.jumprelu:JumpReluSAE",
}
# trained on two variants' paired activations (the config's `crosscoders` block, not `saes`)
CROSSCODERS = {"crosscoder": "workflow.sae.crosscoder:Crosscoder"}
SAELENS_NAMES = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}  # SAELens architecture -> ours
WEIGHTS, CFG = SAE.names["weights"], SAE.names["cfg"]


def architecture(name: str):
    """The SAE class registered under `name`."""
    registered = {**ARCHITECTURES, **CROSSCODERS}
    if name not in registered:
        raise ValueError(f"unknown SAE architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    module, _, cls = registered[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def recipe_from_dict(values: dict):
    """The typed recipe of a config entry (scope keys already removed)."""
    return architecture(values["architecture"]).recipe_type.from_dict(values)


def create(recipe, d_in: int):
    """A new SAE of `recipe` (typed) on inputs of width `d_in`, weights not yet initialised."""
    return architecture(recipe.architecture)(d_in, recipe.d_sae_for(d_in), recipe)


def load(folder: str | Path, device="cpu"):
    """A saved SAE (ours or any SAELens folder of a known architecture), in eval mode."""
    from safetensors.torch import load_file

    from workflow.sae.base import read_cfg
    from workflow.store.checksums import check_sizes

    check_sizes(folder)  # a truncated or missing file fails here, naming the folder and the fix
    cfg = read_cfg(folder)
    meta = cfg.get("metadata", {})
    name = (
        meta.get("architecture")
        if meta.get("architecture") in ARCHITECTURES
        else SAELENS_NAMES.get(cfg["architecture"])
    )
    if name is None:
        raise ValueError(f"{Path(folder) / CFG}: unsupported architecture {cfg['architecture']!r}")
    values = {**meta.get("recipe", {}), "architecture": name}
    if "k" in cfg:
        values["k"] = cfg["k"]
    cls = architecture(name)
    sae = cls(cfg["d_in"], cfg["d_sae"], cls.recipe_type.from_dict(values))
    sae.load_tensors(load_file(str(Path(folder) / WEIGHTS)))
    sae.cfg = cfg
    return sae.to(device).eval()
