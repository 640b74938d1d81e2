"""ReLU SAE with an L1 penalty weighted by decoder row norms (Anthropic, April 2024).

loss = mean_tokens ||x - x_hat||^2 + l1 * mean_tokens sum_i f_i ||W_dec[i]||,
on inputs normalised to mean squared norm d_in. The decoder is unconstrained
(the norm inside the penalty stops the trivial shrink-the-code solution), rows
start at norm 0.1, and the L1 coefficient ramps up linearly over the first
`sparsity_warmup_fraction` of steps. With `target_l0` the coefficient is
adapted each step towards that L0 instead of kept fixed. SAELens loads it as
its `standard` architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workflow.sae.base import SparseAutoencoder
from workflow.sae.losses import penalised
from workflow.sae.recipe import PenaltyRecipe


@dataclass(frozen=True, kw_only=True)
class ReluRecipe(PenaltyRecipe):
    l1_coefficient: float = 5.0
    """Weight of the decoder-norm-weighted L1 penalty, on inputs scaled to mean squared norm d_in."""

    def coefficient(self) -> float:
        return float(self.l1_coefficient)


class ReluSAE(SparseAutoencoder):
    name = "relu"
    saelens_architecture = "standard"
    recipe_type = ReluRecipe
    unit_norm_decoder = False
    initial_decoder_norm = 0.1

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu()

    def training_loss(self, x, step):
        acts = ((x - self.b_dec) @ self.W_enc + self.b_enc).relu()
        recon = acts @ self.W_dec + self.b_dec
        l1 = (acts * self.W_dec.norm(dim=1)).sum() / len(x)
        return penalised(x, acts, recon, "l1", l1, step["coefficient"], count_l0=True)
