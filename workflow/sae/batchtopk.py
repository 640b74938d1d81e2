"""BatchTopK SAE (Bussmann et al. 2024): keep the k * batch largest activations
of the whole batch, so tokens get a variable number of latents (mean k).

At inference a per-latent threshold replaces the batch selection: the running
average (momentum `threshold_momentum`) of the smallest kept activation per
batch. The SAE is therefore saved as a JumpReLU SAE with that threshold, as
SAELens and dictionary_learning do. Training uses the TopK loss (FVU + AuxK)
and the same sparse kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workflow.sae.topk import TopKRecipe, TopKSAE


@dataclass(frozen=True, kw_only=True)
class BatchTopKRecipe(TopKRecipe):
    threshold_momentum: float = 0.99
    """Momentum of the running average that becomes the inference threshold."""


class BatchTopKSAE(TopKSAE):
    name = "batchtopk"
    saelens_architecture = "jumprelu"
    recipe_type = BatchTopKRecipe

    def __init__(self, d_in: int, d_sae: int, recipe: BatchTopKRecipe):
        super().__init__(d_in, d_sae, recipe)
        self.momentum = float(recipe.threshold_momentum)
        self.register_buffer("threshold", torch.zeros(d_sae))
        self._threshold_seen = False

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu() * (pre > self.threshold)

    def ranking(self, pre: torch.Tensor) -> torch.Tensor:
        """What the batch selection ranks (and the threshold compares): the activations."""
        return pre.relu()

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self.ranking(pre).flatten()
        kept = flat.topk(self.k * len(pre), sorted=False)
        order = kept.indices.sort().indices  # row-major, as the sparse kernels need
        flat_idx, vals = kept.indices[order], kept.values[order]
        positive = vals > 0
        flat_idx, vals = flat_idx[positive], vals[positive]
        if self.training and len(vals):
            smallest = float(vals.min())
            with torch.no_grad():
                if self._threshold_seen:
                    self.threshold.mul_(self.momentum).add_((1 - self.momentum) * smallest)
                else:
                    self.threshold.fill_(smallest)
                    self._threshold_seen = True
        return flat_idx // self.d_sae, flat_idx % self.d_sae

    def extra_state(self) -> dict:
        return {"threshold_seen": self._threshold_seen}

    def load_extra_state(self, state: dict) -> None:
        self._threshold_seen = bool(state.get("threshold_seen", False))

    def saelens_tensors(self):
        return {**super().saelens_tensors(), "threshold": self.threshold.float().contiguous()}

    def saelens_cfg(self) -> dict:
        return {}

    def load_tensors(self, tensors):
        super().load_tensors(tensors)
        with torch.no_grad():
            self.threshold.copy_(tensors["threshold"])
        self._threshold_seen = True
