"""Replacing one (site, layer) activation inside a forward pass.

`Splice(base_model, site, layer, fn)` installs a hook at the same place
`models.Capture` reads from and returns ``fn(activation)`` in its stead: the
SAE reconstruction (spliced loss), zeros (zero ablation), or anything else of
the same shape. Used to measure what an SAE's error costs downstream.
"""

from __future__ import annotations

import contextlib
from typing import Callable

from workflow import models


class Splice(contextlib.AbstractContextManager):
    def __init__(self, base_model, site: str, layer: int, fn: Callable):
        models.hook_name(site, layer)  # validates the pair
        self.where, self.site, self.layer, self.fn = models.locate(base_model), site, layer, fn
        if layer > len(self.where.blocks):
            raise ValueError(f"layer {layer} is beyond the model's {len(self.where.blocks)} blocks")
        self._handle = None

    def _on_output(self, module, args, output):
        if isinstance(output, tuple):
            return (self.fn(output[0]), *output[1:])
        return self.fn(output)

    def _on_block_input(self, module, args, kwargs):
        if args:
            return (self.fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self.fn(kwargs["hidden_states"])}

    def __enter__(self):
        w, layer = self.where, self.layer
        if layer == 0 and w.embed_is_block_input:
            self._handle = w.embed_out.register_forward_pre_hook(self._on_block_input, with_kwargs=True)
        elif layer == 0:
            self._handle = w.embed_out.register_forward_hook(self._on_output)
        elif self.site == "resid_post":
            self._handle = w.blocks[layer - 1].register_forward_hook(self._on_output)
        else:
            module = (w.attn_out if self.site == "attn_out" else w.mlp_out)[layer - 1]
            self._handle = module.register_forward_hook(self._on_output)
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return False


def through_sae(sae, max_norm: float | None = None) -> Callable:
    """fn for `Splice`: the SAE's reconstruction of every position; positions whose
    activation norm exceeds `max_norm` (outlier tokens) keep their clean value."""
    import torch

    def fn(acts):
        shape = acts.shape
        flat = acts.reshape(-1, shape[-1]).float()
        out = sae(flat)
        if max_norm is not None:
            out = torch.where((flat.norm(dim=1) > max_norm)[:, None], flat, out)
        return out.reshape(shape).to(acts.dtype)

    return fn


def zeros(acts):
    return acts.new_zeros(acts.shape)


def zeros_except_outliers(max_norm: float | None) -> Callable:
    """fn for `Splice`: zero ablation of the positions `through_sae(sae, max_norm)` replaces."""
    if max_norm is None:
        return zeros

    def fn(acts):
        return acts * (acts.float().norm(dim=-1, keepdim=True) > max_norm).to(acts.dtype)

    return fn
