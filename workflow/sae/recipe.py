"""SAE recipes as typed dataclasses: the keys every architecture shares.

A recipe is one entry of the config's ``saes`` block, without its scope keys
(``datasets``, ``layers``, ``sites``: where it runs, not how). Each
architecture module subclasses `Recipe` with its own keys (`TopKRecipe` in
``topk.py``, ...), every field with its default and a docstring, as sparsify
does. The config schema lists the same keys for users; ``tests/sae/test_recipes.py``
checks that the two agree. No torch import.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

WIDTH_KEYS = ("expansion_factor", "d_sae")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    architecture: str
    """Registered architecture name (`workflow.sae.ARCHITECTURES`), written to cfg.json."""

    expansion_factor: int | None = None
    """d_sae = expansion_factor x d_in (8 when neither this nor d_sae is given)."""

    d_sae: int | None = None
    """Latents; give this or expansion_factor."""

    lr: float = 4.0e-4
    """Peak Adam learning rate."""

    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's (beta1, beta2)."""

    warmup_fraction: float = 0.05
    """Share of steps with linear lr warmup."""

    decay_fraction: float = 0.2
    """Share of final steps with linear lr decay to 0."""

    train_tokens: int = 1_000_000
    """Training tokens; the activation set is cycled if it is smaller."""

    batch_size: int = 4096
    """Tokens per step."""

    seed: int = 0
    """Seed of the initialisation and the shuffled stream; the pretrained and fine-tuned SAEs
    of a recipe start from the same weights."""

    dtype: Literal["float32", "bfloat16", "auto"] = "float32"
    """Training compute: bfloat16 autocast, or auto = bf16 where the device runs it natively."""

    normalize: bool = True
    """Scale inputs to mean squared norm d_in (folded into the saved weights)."""

    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """Initial decoder bias: geometric median (dictionary_learning, OpenAI), mean (sparsify) or zeros."""

    dead_tokens: int = 1_000_000
    """A latent silent for this many training tokens is dead (AuxK revives dead TopK latents)."""

    shuffle_buffer: int = 65536
    """Rows shuffled together in memory."""

    checkpoint_every: int = 1000
    """Steps between resumable checkpoints."""

    log_every: int = 50
    """Steps between progress lines and rows of training_log.parquet."""

    def d_sae_for(self, d_in: int) -> int:
        """Latents of this recipe's SAE on inputs of width `d_in`."""
        return int(self.d_sae) if self.d_sae else int(self.expansion_factor or 8) * d_in

    def coefficient(self) -> float:
        """Starting weight of the sparsity penalty (0: sparsity comes from the activation)."""
        return 0.0

    def l0_target(self) -> float | None:
        """L0 the penalty's coefficient adapts towards (None: a fixed coefficient)."""
        return None

    def coefficient_warmup(self) -> float:
        """Share of steps over which a fixed coefficient ramps up from 0."""
        return 0.0

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """A recipe from its config entry; a key the architecture does not use is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"SAE recipe {values.get('architecture')!r}: unknown keys {unknown}")
        fields = dict(values)
        if "adam_betas" in fields:
            fields["adam_betas"] = tuple(fields["adam_betas"])
        return cls(**fields)

    def as_dict(self) -> dict:
        """The config entry back (sorted keys; the width key not given is left out)."""
        values = dataclasses.asdict(self)
        values["adam_betas"] = list(values["adam_betas"])
        return {k: v for k, v in sorted(values.items()) if not (k in WIDTH_KEYS and v is None)}


@dataclass(frozen=True, kw_only=True)
class PenaltyRecipe(Recipe):
    """A recipe whose sparsity comes from a penalty on the codes (ReLU's L1, JumpReLU's L0)."""

    target_l0: float | None = None
    """Adapt the coefficient each step towards this L0 instead of keeping it fixed."""

    sparsity_warmup_fraction: float = 0.05
    """Share of steps over which a fixed coefficient ramps up from 0."""

    def l0_target(self) -> float | None:
        return self.target_l0

    def coefficient_warmup(self) -> float:
        return self.sparsity_warmup_fraction
