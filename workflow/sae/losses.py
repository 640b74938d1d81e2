"""Loss pieces shared by the architectures."""

from __future__ import annotations

import math

import torch


def reconstruction_terms(x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of squared errors, total variance of the batch, FVU) over a batch of normalised inputs."""
    err = (recon - x).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return err, total, err / total


def penalised(
    x: torch.Tensor,
    acts: torch.Tensor,
    recon: torch.Tensor,
    name: str,
    penalty: torch.Tensor,
    coefficient: float,
    count_l0: bool = False,
) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """(loss, terms for the log, fired latent indices) of the objective mean ||x - x_hat||^2 +
    coefficient x penalty (ReLU's L1, JumpReLU's L0); `count_l0` logs the L0 beside a penalty that is not it."""
    err, _, fvu = reconstruction_terms(x, recon)
    mse = err / len(x)
    fired = acts.detach() > 0
    terms = {"fvu": fvu.detach(), "mse": mse.detach(), name: penalty.detach()}
    if count_l0:
        terms["l0"] = fired.sum() / len(x)
    terms["coefficient"] = torch.tensor(coefficient)
    return mse + coefficient * penalty, terms, fired.nonzero()[:, 1]


def adapt_coefficient(coefficient: float, l0: float, target: float, rate: float = 0.01) -> float:
    """Multiplicative controller for a target L0: raise the sparsity coefficient
    when latents fire more often than `target`, lower it when less, by at most
    a factor exp(rate) per step (L0 answers the coefficient with a lag, so a
    faster controller overshoots by orders of magnitude)."""
    error = math.log(max(l0, 1e-3) / max(target, 1e-8))
    return float(min(max(coefficient * math.exp(rate * max(-1.0, min(1.0, error))), 1e-8), 1e8))
