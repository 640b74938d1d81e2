"""Loss pieces shared by the architectures."""

from __future__ import annotations

import math

import torch


def reconstruction_terms(x: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of squared errors, total variance of the batch, FVU) over a batch of normalised inputs."""
    err = (recon - x).pow(2).sum()
    total = (x - x.mean(0)).pow(2).sum().clamp_min(1e-12)
    return err, total, err / total


def adapt_coefficient(coefficient: float, l0: float, target: float, rate: float = 0.01) -> float:
    """Multiplicative controller for a target L0: raise the sparsity coefficient
    when latents fire more often than `target`, lower it when less, by at most
    a factor exp(rate) per step (L0 answers the coefficient with a lag, so a
    faster controller overshoots by orders of magnitude)."""
    error = math.log(max(l0, 1e-3) / max(target, 1e-8))
    return float(min(max(coefficient * math.exp(rate * max(-1.0, min(1.0, error))), 1e-8), 1e8))
