"""JumpReLU SAE (Rajamanoharan et al. 2024, Gemma Scope).

f = pre * H(pre - threshold), with a learned per-latent threshold (stored as
its log) and an L0 penalty: loss = mean_tokens ||x - x_hat||^2 + l0 * mean L0.
The step function has no gradient; thresholds learn through straight-through
estimators with a rectangle kernel of width `bandwidth` (in normalised units).
Unit-norm decoder rows. With `target_l0` the coefficient is adapted each step
towards that L0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from workflow.sae.base import SparseAutoencoder
from workflow.sae.losses import penalised
from workflow.sae.recipe import PenaltyRecipe


@dataclass(frozen=True, kw_only=True)
class JumpReluRecipe(PenaltyRecipe):
    l0_coefficient: float = 1.0
    """Weight of the L0 penalty."""

    bandwidth: float = 0.05
    """Width of the straight-through rectangle kernel, in normalised units."""

    threshold_init: float = 0.05
    """Initial threshold of every latent."""

    def coefficient(self) -> float:
        return float(self.l0_coefficient)


def _rectangle(u: torch.Tensor) -> torch.Tensor:
    return ((u > -0.5) & (u < 0.5)).to(u.dtype)


class _JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        g_pre = grad * (pre > threshold)
        g_thr = (-(threshold / bw) * _rectangle((pre - threshold) / bw) * grad).sum(0)
        return g_pre, g_thr, None


class _Step(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, threshold, bandwidth):
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        g_thr = (-(1.0 / bw) * _rectangle((pre - threshold) / bw) * grad).sum(0)
        return None, g_thr, None


class JumpReluSAE(SparseAutoencoder):
    name = "jumprelu"
    saelens_architecture = "jumprelu"
    recipe_type = JumpReluRecipe

    def __init__(self, d_in: int, d_sae: int, recipe: JumpReluRecipe):
        super().__init__(d_in, d_sae, recipe)
        self.bandwidth = float(recipe.bandwidth)
        init = float(recipe.threshold_init)
        self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(init)))

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        # as SAELens: ReLU(pre) where pre > threshold
        return pre.relu() * (pre > self.threshold)

    def training_loss(self, x, step):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        threshold = self.threshold
        acts = _JumpReLU.apply(pre, threshold, self.bandwidth)
        recon = acts @ self.W_dec + self.b_dec
        l0 = _Step.apply(pre, threshold, self.bandwidth).sum() / len(x)
        return penalised(x, acts, recon, "l0", l0, step["coefficient"])

    def saelens_tensors(self):
        return {**super().saelens_tensors(), "threshold": self.threshold.detach().float().contiguous()}

    def load_tensors(self, tensors):
        super().load_tensors(tensors)
        with torch.no_grad():
            self.log_threshold.copy_(tensors["threshold"].clamp_min(1e-12).log())
