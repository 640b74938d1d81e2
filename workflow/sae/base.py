"""The sparse autoencoder every architecture shares, and its SAELens v6 folder.

All architectures encode ``pre = (x - b_dec) @ W_enc + b_enc`` and decode
``acts @ W_dec + b_dec``; they differ in the activation that turns `pre` into
sparse `acts` and in the training loss. An architecture is one module that
subclasses `SparseAutoencoder` (with its typed recipe) and is registered under
the name written into ``cfg.json`` (see `workflow.sae.ARCHITECTURES`).

Input normalisation: training inputs are multiplied by ``scale`` so that their
mean squared norm is d_in (SAELens' ``expected_average_only_in``). On save the
scale is folded into the weights (W_enc * s, W_dec / s, b_dec / s), so the
saved SAE reads and reconstructs raw activations and SAELens needs no
normalisation (``normalize_activations: none``); the factor is kept in
``metadata.activation_scale``. Latent values are those of the normalised SAE.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from workflow.layout import SAE
from workflow.sae.recipe import Recipe
from workflow.store.files import atomic_path, write_json

WEIGHTS, CFG = SAE.names["weights"], SAE.names["cfg"]  # as `workflow.sae` names them


class SparseAutoencoder(nn.Module):
    name: str = ""  # recipe architecture, written to cfg.json metadata.architecture
    saelens_architecture: str = ""  # what SAELens loads it as (cfg.json architecture)
    unit_norm_decoder: bool = True

    recipe_type: type[Recipe] = Recipe
    initial_decoder_norm: float = 1.0

    def __init__(self, d_in: int, d_sae: int, recipe: Recipe):
        super().__init__()
        self.d_in, self.d_sae, self.recipe = d_in, d_sae, recipe
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(1.0))  # input multiplier; 1 once folded

    # ------------------------------------------------------------ init

    def initialise(
        self, generator: torch.Generator, b_dec: torch.Tensor | None = None, decoder_norm: float = 1.0
    ) -> None:
        """Random unit decoder rows (times `decoder_norm`), W_enc = W_dec^T, b_enc = 0."""
        with torch.no_grad():
            w = torch.randn(self.d_sae, self.d_in, generator=generator)
            w *= decoder_norm / w.norm(dim=1, keepdim=True)
            self.W_dec.copy_(w)
            self.W_enc.copy_(w.t())
            self.b_enc.zero_()
            if b_dec is not None:
                self.b_dec.copy_(b_dec)

    # ------------------------------------------------------------ inference

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.scale - self.b_dec) @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense sparse codes from pre-activations (inference form)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(x))

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        return (acts @ self.W_dec + self.b_dec) / self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------ training

    def training_loss(self, x: torch.Tensor, step: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """x: normalised inputs. Returns (loss, terms for the log, fired latent indices).

        `step` carries per-step state the loss may read (dead-latent mask, the
        current sparsity coefficient, ...).
        """
        raise NotImplementedError

    def after_step(self) -> None:
        if self.unit_norm_decoder:
            with torch.no_grad():
                self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    def before_step(self) -> None:
        """Drop the gradient component that would change unit decoder norms (as sparsify)."""
        if self.unit_norm_decoder and self.W_dec.grad is not None:
            with torch.no_grad():
                w, g = self.W_dec, self.W_dec.grad
                g -= (g * w).sum(1, keepdim=True) * w

    def extra_state(self) -> dict:
        """Training state beyond parameters (kept in checkpoints)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # ------------------------------------------------------------ saving

    def saelens_tensors(self) -> dict[str, torch.Tensor]:
        """Weights with the input scale folded in (SAELens layout)."""
        s = float(self.scale)
        with torch.no_grad():
            return {
                "W_enc": (self.W_enc * s).float().contiguous(),
                "b_enc": self.b_enc.float().contiguous(),
                "W_dec": (self.W_dec / s).float().contiguous(),
                "b_dec": (self.b_dec / s).float().contiguous(),
            }

    def saelens_cfg(self) -> dict:
        return {}

    def save(self, folder: str | Path, metadata: dict) -> list[str]:
        """Write sae_weights.safetensors, then cfg.json (each atomically); returns their names."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / WEIGHTS) as tmp:
            save_file(self.saelens_tensors(), str(tmp))
        cfg = {
            "architecture": self.saelens_architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            **self.saelens_cfg(),
            "metadata": {
                **metadata,
                "architecture": self.name,
                "activation_scale": float(self.scale),
                "recipe": self.recipe.as_dict(),
            },
        }
        write_json(cfg, folder / CFG)
        return [WEIGHTS, CFG]

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for key in ("W_enc", "b_enc", "W_dec", "b_dec"):
                getattr(self, key).copy_(tensors[key])
            self.scale.fill_(1.0)


def read_cfg(folder: str | Path) -> dict:
    return json.loads((Path(folder) / CFG).read_text())


def lr_at(step: int, n_steps: int, lr: float, warmup_fraction: float, decay_fraction: float) -> float:
    """Linear warmup, constant, then linear decay to zero over the last `decay_fraction` of steps."""
    warmup = max(1, math.ceil(warmup_fraction * n_steps)) if warmup_fraction > 0 else 0
    decay = math.ceil(decay_fraction * n_steps)
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if decay and step >= n_steps - decay:
        return lr * (n_steps - step) / decay
    return lr


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm (as dictionary_learning and OpenAI initialise b_dec)."""
    x = x.double()
    median = x.mean(0)
    for _ in range(iters):
        dist = (x - median).norm(dim=1).clamp_min(1e-8)
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(0) / weights.sum()
        if (new - median).norm() <= tol * median.norm().clamp_min(1.0):
            median = new
            break
        median = new
    return median.float()
