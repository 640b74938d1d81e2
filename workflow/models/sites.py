"""Layer and site grammar (the README's "Layers" and "Sites").

Layer L is the output of transformer block L (1-based); L = 0 is the embedding
output, the input of block 1. Sites:

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
"""

from __future__ import annotations

SITES = ("resid_post", "attn_out", "mlp_out")


def hook_name(site: str, layer: int) -> str:
    """TransformerLens name of (site, layer)."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; known: {', '.join(SITES)}")
    if layer == 0:
        if site != "resid_post":
            raise ValueError(f"site {site!r} has no layer 0 (the embedding output)")
        return "blocks.0.hook_resid_pre"
    return f"blocks.{layer - 1}.hook_{site}"
