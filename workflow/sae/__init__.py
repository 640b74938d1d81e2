"""Sparse autoencoders: one architecture per module, registered by name.

`ARCHITECTURES` maps the recipe name (``relu``, ``topk``, ``batchtopk``,
``jumprelu``; written to cfg.json as ``metadata.architecture``) to its class;
each class also names the SAELens architecture it is saved as (``standard``,
``topk``, ``jumprelu``). `create` builds one from a recipe, `load` reads a
saved folder back (weights with the input scale folded in).
"""

from __future__ import annotations

from pathlib import Path

from workflow.sae.base import CFG, WEIGHTS, SparseAutoencoder, read_cfg
from workflow.sae.batchtopk import BatchTopKSAE
from workflow.sae.jumprelu import JumpReluSAE
from workflow.sae.relu import ReluSAE
from workflow.sae.topk import TopKSAE

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {cls.name: cls for cls in (ReluSAE, TopKSAE, BatchTopKSAE, JumpReluSAE)}
SAELENS_NAMES = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


def d_sae_of(recipe: dict, d_in: int) -> int:
    return int(recipe["d_sae"]) if recipe.get("d_sae") else int(recipe["expansion_factor"]) * d_in


def create(recipe: dict, d_in: int) -> SparseAutoencoder:
    name = recipe["architecture"]
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown SAE architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](d_in, d_sae_of(recipe, d_in), recipe)


def load(folder: str | Path, device="cpu") -> SparseAutoencoder:
    """A saved SAE (ours or any SAELens folder of a known architecture), in eval mode."""
    from safetensors.torch import load_file

    cfg = read_cfg(folder)
    meta = cfg.get("metadata", {})
    name = meta.get("architecture") if meta.get("architecture") in ARCHITECTURES else SAELENS_NAMES.get(cfg["architecture"])
    if name is None:
        raise ValueError(f"{Path(folder) / CFG}: unsupported architecture {cfg['architecture']!r}")
    recipe = {**meta.get("recipe", {}), "architecture": name}
    if "k" in cfg:
        recipe["k"] = cfg["k"]
    sae = ARCHITECTURES[name](cfg["d_in"], cfg["d_sae"], recipe)
    sae.load_tensors(load_file(str(Path(folder) / WEIGHTS)))
    sae.cfg = cfg
    return sae.to(device).eval()


__all__ = ["ARCHITECTURES", "CFG", "WEIGHTS", "SparseAutoencoder", "create", "load", "d_sae_of"]
