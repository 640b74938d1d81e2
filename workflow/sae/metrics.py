"""Streaming reconstruction metrics of an SAE: one accumulator, fed batch by batch.

FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens seen
(explained variance = 1 - FVU); cosine and l2_ratio (||x_hat|| / ||x||) are
means over tokens; l0 and l1 are the mean count and sum of active latents per
token; a latent is dead if it never fired on these tokens and dense if it
fired on more than `dense_threshold` of them. Used by `evaluate_sae` (all test
tokens) and by `diff` (SAE transfer, outlier-norm tokens left out). `l0_warning` says when an
SAE's evaluated L0 missed the sparsity its recipe asked for.
"""

from __future__ import annotations

import numpy as np

from workflow.sae.codes import encode_batches
from workflow.store.activations import ActivationSet


class Reconstruction:
    def __init__(self, d_in: int, d_sae: int):
        self.n, self.sq_err, self.sum_x, self.sum_sq = 0, 0.0, np.zeros(d_in), 0.0
        self.cos_sum, self.ratio_sum, self.l0_sum, self.l1_sum = 0.0, 0.0, 0.0, 0.0
        self.fires = np.zeros(d_sae, dtype=np.int64)

    def update(self, x, acts, x_hat) -> None:
        """x, x_hat: (B, d_in) tensors; acts: (B, d_sae) codes."""
        import torch.nn.functional as F

        if not len(x):
            return
        self.sq_err += float((x_hat - x).double().pow(2).sum())
        self.sum_x += x.double().sum(0).cpu().numpy()
        self.sum_sq += float(x.double().pow(2).sum())
        self.cos_sum += float(F.cosine_similarity(x_hat, x, dim=1).double().sum())
        self.ratio_sum += float((x_hat.norm(dim=1) / x.norm(dim=1).clamp_min(1e-12)).double().sum())
        active = acts > 0
        self.l0_sum += float(active.sum())
        self.l1_sum += float(acts.double().sum())
        self.fires += active.sum(0).cpu().numpy()
        self.n += len(x)

    def frequency(self) -> np.ndarray:
        return self.fires / max(self.n, 1)

    def result(self, dense_threshold: float = 0.1) -> dict:
        n = max(self.n, 1)
        total_var = self.sum_sq - float(self.sum_x @ self.sum_x) / n
        fvu = self.sq_err / total_var if total_var > 0 else float("nan")
        freq = self.frequency()
        return {
            "n_tokens": self.n,
            "mse": self.sq_err / (n * len(self.sum_x)),
            "fvu": fvu,
            "explained_variance": 1 - fvu,
            "cosine": self.cos_sum / n,
            "l2_ratio": self.ratio_sum / n,
            "l0": self.l0_sum / n,
            "l1": self.l1_sum / n,
            "dead_fraction": float((freq == 0).mean()),
            "dense_fraction": float((freq > dense_threshold).mean()),
            "dense_threshold": dense_threshold,
        }


def measure(
    sae, aset: ActivationSet, max_tokens: int | None, batch_rows: int, device="cpu", max_norm: float | None = None
) -> tuple[Reconstruction, int]:
    """Reconstruction statistics of `sae` over an activation set, and how many tokens were left out:
    with `max_norm`, tokens whose activation norm exceeds it (outliers) are not counted."""
    import torch

    stats, excluded = Reconstruction(sae.d_in, sae.d_sae), 0
    for _, x, acts in encode_batches(sae, aset, max_tokens, batch_rows, device):
        if max_norm is not None:
            keep = x.norm(dim=1) <= max_norm
            excluded += int((~keep).sum())
            x, acts = x[keep], acts[keep]
        with torch.inference_mode():
            stats.update(x, acts, sae.decode(acts))
    return stats, excluded


L0_TOLERANCE = 0.25  # an evaluated L0 further than this share from the recipe's target is named

ADVICE = {
    "batchtopk": "its inference threshold does not reproduce the batch selection: train longer (train_tokens) or "
    "calibrate on more batches (calibration_batches)",
    "topk": "latents fire below zero or are dead: train longer (train_tokens) or lower lr",
    "jumprelu": "the sparsity coefficient adapted too slowly: train longer (train_tokens) or start it higher "
    "(l0_coefficient)",
    "relu": "the sparsity coefficient adapted too slowly: train longer (train_tokens) or start it higher "
    "(l1_coefficient)",
}


def l0_target(recipe: dict) -> tuple[str, float] | None:
    """The L0 a recipe asks for: (key, value) of k (TopK, BatchTopK) or target_l0 (where set)."""
    for key in ("k", "target_l0"):
        if recipe.get(key):
            return key, float(recipe[key])
    return None


def l0_warning(recipe: dict, l0: float) -> str | None:
    """What to say when the evaluated `l0` is more than L0_TOLERANCE away from the recipe's target."""
    target = l0_target(recipe)
    if target is None or abs(l0 - target[1]) <= L0_TOLERANCE * target[1]:
        return None
    key, value = target
    side = "below" if l0 < value else "above"
    return (
        f"L0 {l0:.1f} on the test tokens is {abs(l0 - value) / value:.0%} {side} the recipe's {key} {value:g}: "
        f"{ADVICE.get(recipe.get('architecture'), 'train longer (train_tokens)')}"
    )
