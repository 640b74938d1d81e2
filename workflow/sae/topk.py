"""TopK SAE (Gao et al. 2024): keep the k largest pre-activations per token.

Training follows sparsify: loss = FVU + aux_coefficient * AuxK, where AuxK
reconstructs the residual from the top `aux_k` pre-activations of dead latents
(latents that have not fired for `dead_tokens` training tokens). Unit-norm
decoder rows. The encoder backward and the decode are sparse
(`kernels.selected_preacts`, `kernels.sparse_decode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workflow.sae import kernels
from workflow.sae.base import SparseAutoencoder
from workflow.sae.losses import reconstruction_terms
from workflow.sae.recipe import Recipe


@dataclass(frozen=True, kw_only=True)
class TopKRecipe(Recipe):
    k: int
    """Latents kept per token (BatchTopK: on average over the batch)."""

    aux_k: int | None = None
    """Dead latents the AuxK loss reconstructs the residual with (None: d_in / 2)."""

    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (sparsify's default)."""

    sparse_kernels: bool = True
    """Sparse encoder backward and embedding_bag decode (False: the dense reference twins)."""


class TopKSAE(SparseAutoencoder):
    name = "topk"
    saelens_architecture = "topk"
    recipe_type = TopKRecipe

    def __init__(self, d_in: int, d_sae: int, recipe: TopKRecipe):
        super().__init__(d_in, d_sae, recipe)
        self.k = int(recipe.k)
        self.aux_k = int(recipe.aux_k or d_in // 2)
        self.aux_coefficient = float(recipe.aux_coefficient)
        sparse = recipe.sparse_kernels
        self._preacts = kernels.selected_preacts if sparse else kernels.dense_selected_preacts
        self._decode = kernels.sparse_decode if sparse else kernels.dense_decode

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        # as SAELens' TopK: top k of the pre-activations, then ReLU of the kept values
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals.relu())

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, cols) of the kept latents, row-major."""
        idx = pre.topk(self.k, dim=-1, sorted=False).indices
        rows = torch.arange(len(pre), device=pre.device).repeat_interleave(self.k)
        return rows, idx.flatten()

    def training_loss(self, x, step):
        with torch.no_grad():
            pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        rows, cols = self.select(pre)
        vals = self._preacts(x, self.b_dec, self.W_enc, self.b_enc, rows, cols, pre).relu()
        recon = self._decode(rows, cols, vals, self.W_dec, len(x)) + self.b_dec
        err, total, fvu = reconstruction_terms(x, recon)
        loss, terms = fvu, {"fvu": fvu.detach()}
        dead = step.get("dead_mask")
        if self.aux_coefficient > 0 and dead is not None and bool(dead.any()):
            loss = loss + self.aux_coefficient * self.auxk_loss(x, recon, pre, dead, total)
            terms["auxk"] = ((loss - fvu) / self.aux_coefficient).detach()
        fired = cols[vals.detach() > 0]
        terms["l0"] = torch.tensor(len(fired) / len(x))
        return loss, terms, fired

    def auxk_loss(self, x, recon, pre, dead, total):
        n_dead = int(dead.sum())
        k_aux = min(self.aux_k, n_dead)
        with torch.no_grad():
            idx = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1, sorted=False).indices
        rows = torch.arange(len(pre), device=pre.device).repeat_interleave(k_aux)
        cols = idx.flatten()
        vals = self._preacts(x, self.b_dec, self.W_enc, self.b_enc, rows, cols, pre).relu()
        residual_hat = self._decode(rows, cols, vals, self.W_dec, len(x))
        residual = (x - recon).detach()
        return min(n_dead / self.aux_k, 1.0) * (residual_hat - residual).pow(2).sum() / total

    def saelens_cfg(self) -> dict:
        return {"k": self.k, "rescale_acts_by_decoder_norm": False}
