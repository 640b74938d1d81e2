"""The BatchTopK acausal crosscoder (Lindsey et al. 2024; the BatchTopK crosscoder of Minder et
al. 2025) on two variants' activations of the same tokens.

One dictionary of latents reads both variants at once and writes each back through its own
decoder: ``pre = sum_side (x_side - b_dec_side) @ W_enc_side + b_enc`` and ``x_hat_side =
acts @ W_dec_side + b_dec_side``. That is an SAE on the two sides concatenated (2 x d_in wide),
so training reuses the TopK family's sparse kernels, AuxK and the SAE trainer; what differs:

- decoder rows are not held at unit norm: each latent's two decoder norms are what the
  crosscoder reports (relative decoder norm: base-only, shared, fine-tuned-only);
- BatchTopK keeps the k x batch largest activations weighted by the latent's summed decoder
  norms (``relu(pre) * (||d_pre|| + ||d_ft||)``), as Minder et al. do, so a latent cannot win
  selection by shrinking its decoder; the inference threshold is the running average of the
  smallest kept weighted activation, as `BatchTopKSAE`;
- each side is scaled to mean squared norm d_in on its own (a variant whose activations grew
  does not look "fine-tuned-only" everywhere); decoder norms are compared in that space.

Saved (`save`) as ``crosscoder_weights.safetensors`` + ``cfg.json``, with the per-side input
scale folded into the weights, so the saved crosscoder reads and reconstructs raw activations:
``W_enc [2, d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [2, d_sae, d_in]``, ``b_dec [2, d_in]``,
``threshold [d_sae]`` (JumpReLU form: a latent fires where its pre-activation exceeds it). Side
0 is the pretrained variant, side 1 the fine-tuned one. `load` gives the crosscoder back in
its training form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from workflow.layout import VARIANTS
from workflow.sae.batchtopk import BatchTopKRecipe, BatchTopKSAE
from workflow.store.files import atomic_path, write_json

SIDES = VARIANTS  # side 0, side 1: the order of the concatenated input and of every per-side tensor
WEIGHTS, CFG = "crosscoder_weights.safetensors", "cfg.json"


@dataclass(frozen=True, kw_only=True)
class CrosscoderRecipe(BatchTopKRecipe):
    """A BatchTopK recipe; ``expansion_factor`` counts latents per d_in of one side."""

    architecture: str = "crosscoder"

    def d_sae_for(self, d_in: int) -> int:
        """Latents on sides of width `d_in` (the crosscoder's input is 2 x d_in wide)."""
        return int(self.d_sae) if self.d_sae else int(self.expansion_factor or 8) * (d_in // 2)


class Crosscoder(BatchTopKSAE):
    name = "crosscoder"
    saelens_architecture = ""
    unit_norm_decoder = False
    recipe_type = CrosscoderRecipe
    initial_decoder_norm = 2**-0.5  # each latent's whole (two-sided) decoder row starts at unit norm

    def __init__(self, d_in: int, d_sae: int, recipe: CrosscoderRecipe):
        """d_in: the concatenated width (2 x one side's)."""
        super().__init__(d_in, d_sae, recipe)
        self.side = d_in // 2
        self.register_buffer("scale", torch.ones(d_in))  # per input dimension: each side's own scale

    def initialise(self, generator, b_dec=None, decoder_norm: float = 1.0) -> None:
        """Random decoder rows of norm `decoder_norm` on each side, W_enc = W_dec^T, b_enc = 0."""
        with torch.no_grad():
            w = torch.randn(self.d_sae, 2, self.side, generator=generator)
            w *= decoder_norm / w.norm(dim=2, keepdim=True)
            self.W_dec.copy_(w.reshape(self.d_sae, -1))
            self.W_enc.copy_(self.W_dec.t())
            self.b_enc.zero_()
            if b_dec is not None:
                self.b_dec.copy_(b_dec)

    def decoder_norms(self) -> torch.Tensor:
        """(d_sae, 2): each latent's decoder norm on each side (in the normalised space)."""
        return self.W_dec.detach().reshape(self.d_sae, 2, self.side).norm(dim=2)

    def _weight(self) -> torch.Tensor:
        return self.decoder_norms().sum(1).clamp_min(1e-8)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        pre = pre.relu()
        return pre * (pre * self._weight() > self.threshold)

    def ranking(self, pre: torch.Tensor) -> torch.Tensor:
        """Activations weighted by the latent's summed decoder norms (Minder et al.)."""
        return pre.relu() * self._weight()

    # ------------------------------------------------------------ one side

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (pretrained, fine-tuned) halves of concatenated rows."""
        return x[..., : self.side], x[..., self.side :]

    def decode_side(self, acts: torch.Tensor, side: int) -> torch.Tensor:
        """Raw reconstruction of one side (0 pretrained, 1 fine-tuned)."""
        cut = slice(side * self.side, (side + 1) * self.side)
        return (acts @ self.W_dec[:, cut] + self.b_dec[cut]) / self.scale[cut]

    def side_contributions(self, x: torch.Tensor, features: torch.Tensor, side: int) -> torch.Tensor:
        """What one side adds to the pre-activation of latent features[i] on raw row x[i]:
        ``(x_side * scale - b_dec_side) @ W_enc_side[:, f]`` (the pre-activation is both sides'
        contributions plus b_enc)."""
        cut = slice(side * self.side, (side + 1) * self.side)
        xs = x[:, cut] * self.scale[cut] - self.b_dec[cut]
        return (xs * self.W_enc[cut][:, features].t()).sum(1)

    # ------------------------------------------------------------ saving

    def saelens_tensors(self) -> dict[str, torch.Tensor]:
        """Folded weights (raw activations in and out), shaped per side; the threshold in
        pre-activation units."""
        s = self.scale
        with torch.no_grad():
            return {
                "W_enc": (self.W_enc * s[:, None]).reshape(2, self.side, self.d_sae).float().contiguous(),
                "b_enc": self.b_enc.float().contiguous(),
                "W_dec": (self.W_dec / s).reshape(self.d_sae, 2, self.side).transpose(0, 1).float().contiguous(),
                "b_dec": (self.b_dec / s).reshape(2, self.side).float().contiguous(),
                "threshold": (self.threshold / self._weight()).float().contiguous(),
            }

    def save(self, folder: str | Path, metadata: dict) -> list[str]:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(self.saelens_tensors(), str(tmp))
        cfg = {
            "architecture": "batchtopk_crosscoder",
            "sides": list(SIDES),
            "d_in": self.side,
            "d_sae": self.d_sae,
            "k": self.k,
            "dtype": "float32",
            "metadata": {
                **metadata,
                "activation_scale": [float(self.scale[0]), float(self.scale[-1])],
                "recipe": self.recipe.as_dict(),
            },
        }
        write_json(cfg, folder / CFG)
        return [WEIGHTS, CFG]

    def load_tensors(self, tensors: dict[str, torch.Tensor], scale=(1.0, 1.0)) -> None:
        """Saved (folded) tensors back into the training form, with the per-side `scale`."""
        s = torch.cat([torch.full((self.side,), float(v)) for v in scale])
        with torch.no_grad():
            self.scale.copy_(s)
            self.W_enc.copy_(tensors["W_enc"].reshape(-1, self.d_sae) / s[:, None])
            self.b_enc.copy_(tensors["b_enc"])
            self.W_dec.copy_(tensors["W_dec"].transpose(0, 1).reshape(self.d_sae, -1) * s)
            self.b_dec.copy_(tensors["b_dec"].reshape(-1) * s)
            self.threshold.copy_(tensors["threshold"] * self._weight())
        self._threshold_seen = True


def load(folder: str | Path, device="cpu") -> Crosscoder:
    """A saved crosscoder, in eval mode."""
    import json

    from safetensors.torch import load_file

    from workflow.store.checksums import check_sizes

    check_sizes(folder)
    cfg = json.loads((Path(folder) / CFG).read_text())
    if cfg.get("architecture") != "batchtopk_crosscoder":
        raise ValueError(f"{Path(folder) / CFG}: not a crosscoder (architecture {cfg.get('architecture')!r})")
    recipe = CrosscoderRecipe.from_dict({**cfg["metadata"]["recipe"], "architecture": "crosscoder"})
    model = Crosscoder(2 * cfg["d_in"], cfg["d_sae"], recipe)
    model.load_tensors(load_file(str(Path(folder) / WEIGHTS)), cfg["metadata"]["activation_scale"])
    model.cfg = cfg
    return model.to(device).eval()
