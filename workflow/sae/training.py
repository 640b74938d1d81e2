"""Training one SAE on one activation set (the train split).

Batches stream from the memmapped shards through a seeded shuffle buffer
(`workflow.sae.stream`); inputs are scaled to mean squared norm d_in; b_dec
starts at the geometric median of a sample (or the mean, or zero); the lr warms
up linearly, holds, then decays linearly to zero. Dead latents (no firing for
`dead_tokens` training tokens) are tracked and feed AuxK in the TopK family.
Every `checkpoint_every` steps the full training state is saved beside the
output; a re-run of an interrupted job resumes from it and ends with the same
weights as an uninterrupted run. A non-finite loss stops the job with an error
that names the step.

A library: it reads activation sets (`workflow.store`) and knows nothing of models, configs or the
build system. The caller picks the device and the autocast dtype (`workflow.models.loading` does for
the stages) and passes the trainer's code version, which a checkpoint must match to be resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import polars as pl

from workflow.layout import SAE
from workflow.sae import create
from workflow.sae.base import geometric_median, lr_at
from workflow.sae.losses import adapt_coefficient
from workflow.sae.recipe import Recipe
from workflow.sae.stream import ShuffledRows
from workflow.store import checksums
from workflow.store.activations import ActivationSet
from workflow.store.files import atomic_path, write_parquet

log = logging.getLogger(__name__)

CHECKPOINT, LOG_TABLE = SAE.names["checkpoint"], SAE.names["training_log"]
B_DEC_SAMPLE = 16384  # rows for the geometric median


class NonFiniteError(RuntimeError):
    pass


class TooFewTokensError(ValueError):
    """The training set holds less than one batch."""

    user_facing = True  # `python -m workflow` prints the message, not a traceback


def initial_sae(recipe: Recipe, d_in: int, b_dec=None):
    """The SAE before training: a function of the recipe's seed only, so the pretrained and
    fine-tuned SAEs of a recipe start from the same weights (`diff` reports how far each moved)."""
    import torch

    torch.manual_seed(recipe.seed)
    sae = create(recipe, d_in)
    sae.initialise(torch.Generator().manual_seed(recipe.seed), b_dec, sae.initial_decoder_norm)
    return sae


def fingerprint(recipe: Recipe, aset: ActivationSet, start_id: str = "", code: str = "") -> str:
    """What a checkpoint must match to be resumed: recipe, data, starting SAE and trainer code (`code`:
    the caller's version of the code that trains, e.g. the stage's code version)."""
    keys = ("n_rows", "d_model", "mean_sq_norm", "hook_name", "model", "variant", "dataset")
    data = {k: aset.manifest.get(k) for k in keys}
    blob = json.dumps([recipe.as_dict(), data, code, start_id], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def input_scale(aset, normalize: bool):
    """The multiplier that brings the inputs to mean squared norm d_in: one number for an
    activation set, one per side (repeated over its dimensions) for paired sets."""
    import torch

    msn = aset.manifest["mean_sq_norm"]
    if not normalize:
        return torch.tensor(1.0) if not isinstance(msn, list) else torch.ones(aset.d_model)
    if not isinstance(msn, list):
        return torch.tensor(math.sqrt(aset.d_model / msn))
    side = aset.d_model // len(msn)
    return torch.cat([torch.full((side,), math.sqrt(side / m)) for m in msn])


def recipe_autocast(recipe: Recipe, device):
    """The autocast dtype of a recipe's ``dtype`` on `device`, where the caller passes none: None
    (float32) for ``float32``, bfloat16 for ``bfloat16``, and for ``auto`` bfloat16 only where the
    device runs it natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX): emulated bf16 on a CPU
    without it is many times slower than float32. The stages pass the same decision for models and
    SAEs alike (`workflow.models.loading.autocast_dtype`)."""
    import torch

    if recipe.dtype == "float32":
        return None
    if recipe.dtype == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.cpu._is_avx512_bf16_supported()
        return torch.bfloat16 if native else None
    return torch.bfloat16


def _initial_b_dec(stream: ShuffledRows, how: str, scale, d_in: int):
    import torch

    sample = torch.from_numpy(stream.sample(B_DEC_SAMPLE)) * scale
    return {
        "geometric_median": lambda: geometric_median(sample),
        "mean": lambda: sample.mean(0),
        "zeros": lambda: torch.zeros(d_in),
    }[how]()


class Trainer:
    """The training state of one SAE: `fit()` runs every step from where a checkpoint left off.

    `aset` is an `ActivationSet` or, for a crosscoder, `PairedSets`. `start`: an SAE (in its
    training form) to keep training instead of a fresh one (stage-wise fine-tuning): its weights,
    threshold and input scale are kept, b_dec is not re-initialised; `start_id` names it in the
    checkpoint fingerprint. `amp`: the autocast dtype (None: float32); `code`: the trainer's code
    version, part of the fingerprint."""

    def __init__(self, aset, recipe: Recipe, out: Path, device, start=None, start_id="", amp=None, code=""):
        import torch

        self.aset, self.recipe, self.out, self.device = aset, recipe, out, device
        self.n_steps = max(1, math.ceil(recipe.train_tokens / recipe.batch_size))
        self.stream = ShuffledRows(aset, recipe.batch_size, recipe.seed, recipe.shuffle_buffer)
        d_in = aset.d_model
        self.amp = amp
        if start is None:
            scale = input_scale(aset, recipe.normalize)
            self.sae = initial_sae(recipe, d_in, _initial_b_dec(self.stream, recipe.b_dec_init, scale, d_in))
            self.sae.scale.copy_(scale)
        else:
            self.sae = start
        self.scale = self.sae.scale.detach().clone().to(device)
        self.sae.to(device).train()
        # the fused kernel: one pass over each parameter instead of a dozen (the Adam step of a 768 x 24,576
        # SAE fell from 146 to 21 ms on 2 CPU cores; weights equal to 1e-7 after 30 steps)
        fused = device.type in ("cpu", "cuda") or None
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=recipe.lr, betas=tuple(recipe.adam_betas), fused=fused
        )
        self.fingerprint = fingerprint(recipe, aset, start_id, code)
        self.state = {
            "step": 0,
            "coefficient": recipe.coefficient(),
            "log": [],
            "seconds": 0.0,
            "since_fired": torch.zeros(self.sae.d_sae, dtype=torch.long),
        }
        self._resume()
        self.since_fired = self.state["since_fired"].to(device)

    def _resume(self) -> None:
        import torch

        checkpoint = self.out / CHECKPOINT
        if not checkpoint.exists():
            return
        saved = torch.load(checkpoint, map_location=self.device, weights_only=False)
        if saved.get("fingerprint") != self.fingerprint:
            log.info("ignoring %s: written for another recipe, data set or trainer version", checkpoint)
            return
        self.sae.load_state_dict(saved["model"])
        self.sae.load_extra_state(saved["extra"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.state = saved["state"]
        log.info("resuming from %s at step %d/%d", checkpoint, self.state["step"], self.n_steps)

    def _coefficient(self, step: int) -> float:
        """The sparsity coefficient of `step`: adapted towards a target L0, or ramped up over the warmup."""
        warm_steps = math.ceil(self.recipe.coefficient_warmup() * self.n_steps)
        if self.recipe.l0_target() is None and warm_steps:
            return self.recipe.coefficient() * min(1.0, (step + 1) / warm_steps)
        return self.state["coefficient"]

    def _train_step(self, step: int, x) -> tuple[float, object, dict]:
        """One optimiser step on the normalised batch `x`; returns (lr, loss, terms)."""
        import torch

        recipe = self.recipe
        lr = lr_at(step, self.n_steps, recipe.lr, recipe.warmup_fraction, recipe.decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        dead = self.since_fired >= recipe.dead_tokens
        with torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            loss, terms, fired = self.sae.training_loss(x, {"dead_mask": dead, "coefficient": self._coefficient(step)})
        if not torch.isfinite(loss):
            described = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            raise NonFiniteError(
                f"{self.out}: loss is {float(loss)} at step {step} ({described}); "
                f"lower lr (now {lr:.3g}) or check the activations in {self.aset.folder}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sae.before_step()
        self.optimizer.step()
        self.sae.after_step()
        self.since_fired += len(x)
        self.since_fired[fired] = 0
        if recipe.l0_target() is not None:
            self.state["coefficient"] = adapt_coefficient(
                self.state["coefficient"], float(terms["l0"]), recipe.l0_target()
            )
        return lr, loss, terms

    def _log(self, done: int, lr: float, loss, terms: dict, tokens_per_s: float) -> None:
        row = {
            "step": done,
            "tokens": done * self.recipe.batch_size,
            "lr": lr,
            "loss": float(loss.detach()),
            **{k: float(v) for k, v in terms.items()},
            "dead_fraction": float((self.since_fired >= self.recipe.dead_tokens).float().mean()),
            "tokens_per_s": tokens_per_s,
        }
        self.state["log"].append(row)
        log.info(
            "step %d/%d  %.0f tokens/s  loss %.4f  %s  dead %.3f  lr %.2e",
            done,
            self.n_steps,
            tokens_per_s,
            row["loss"],
            "  ".join(f"{k} {row[k]:.4g}" for k in terms),
            row["dead_fraction"],
            lr,
        )

    def _checkpoint(self, done: int, seconds: float) -> None:
        import torch

        self.state.update(step=done, since_fired=self.since_fired.cpu(), seconds=self.state["seconds"] + seconds)
        with atomic_path(self.out / CHECKPOINT) as tmp:
            torch.save(
                {
                    "fingerprint": self.fingerprint,
                    "model": self.sae.state_dict(),
                    "extra": self.sae.extra_state(),
                    "optimizer": self.optimizer.state_dict(),
                    "state": self.state,
                },
                tmp,
            )

    def calibrate(self) -> None:
        """Architectures with an inference threshold (BatchTopK) set it from the final weights on
        the first `calibration_batches` batches of the train stream."""
        import torch

        n = min(getattr(self.recipe, "calibration_batches", 0), self.n_steps)
        if not n or not hasattr(self.sae, "calibrate"):
            return
        self.sae.eval()
        batches = self.stream.batches(0)
        with torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None):
            before = self.sae.calibrate(torch.from_numpy(next(batches)).to(self.device).float() for _ in range(n))
        if before is not None:
            log.info(
                "inference threshold from the final weights on %d tokens: %.4g (the running average was %.4g)",
                n * self.recipe.batch_size,
                float(self.sae.threshold.mean()),
                before,
            )

    def fit(self) -> float:
        """Train to the last step; returns the training seconds (resumed runs included)."""
        import torch

        started, tokens_done = time.perf_counter(), 0
        batches = self.stream.batches(self.state["step"])
        for step in range(self.state["step"], self.n_steps):
            x = torch.from_numpy(next(batches)).to(self.device) * self.scale
            if not torch.isfinite(x).all():
                raise NonFiniteError(
                    f"{self.aset.folder}: non-finite activations in the batch of step {step} "
                    "(float16 overflow? extract with dtype: float32)"
                )
            lr, loss, terms = self._train_step(step, x)
            tokens_done += len(x)
            done = step + 1
            if done % self.recipe.log_every == 0 or done == self.n_steps:
                self._log(done, lr, loss, terms, tokens_done / (time.perf_counter() - started))
            if done % self.recipe.checkpoint_every == 0 and done < self.n_steps:
                self._checkpoint(done, time.perf_counter() - started)
                started, tokens_done = time.perf_counter(), 0
        return self.state["seconds"] + time.perf_counter() - started


def _opened(acts_folder, recipe: Recipe):
    """The activation set to train on, checked to hold at least one batch."""
    aset = acts_folder if hasattr(acts_folder, "manifest") else ActivationSet(acts_folder)
    if aset.n_rows < recipe.batch_size:
        raise TooFewTokensError(
            f"{aset.folder}: {aset.n_rows} tokens, fewer than one batch of {recipe.batch_size}: lower the "
            "recipe's batch_size, or give the dataset more (or longer) training documents"
        )
    return aset


def train(
    acts_folder,
    recipe: Recipe,
    out_folder: str,
    metadata: dict,
    device=None,
    start=None,
    start_id="",
    *,
    amp="recipe",
    code="",
) -> dict:
    """Train, save the SAELens folder (sae_weights.safetensors, cfg.json) and training_log.parquet.
    `acts_folder`: an activation set folder, or an already opened set (`PairedSets` for a
    crosscoder); `device`: CUDA where there is one, else the CPU, unless given; `amp`: the autocast
    dtype, or ``"recipe"`` for `recipe_autocast`; `start`, `start_id`, `code`: as `Trainer`."""
    import torch

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = recipe_autocast(recipe, device) if isinstance(amp, str) and amp == "recipe" else amp
    aset = _opened(acts_folder, recipe)
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / checksums.NAME).unlink(missing_ok=True)  # an earlier run's: it lists files this run replaces
    trainer = Trainer(aset, recipe, out, device, start, start_id, amp, code)
    log.info(
        "device: %s; %s %s -> %s: d_in %d, d_sae %d, %d steps x %d tokens (%d rows in set), scale %s, autocast %s",
        device,
        recipe.architecture,
        aset.folder,
        out,
        aset.d_model,
        trainer.sae.d_sae,
        trainer.n_steps,
        recipe.batch_size,
        aset.n_rows,
        " / ".join(f"{float(v):.4g}" for v in trainer.scale.flatten().unique_consecutive()),
        trainer.amp,
    )
    seconds = trainer.fit()
    trainer.calibrate()
    sae = trainer.sae.cpu().eval()
    written = sae.save(out, metadata)
    write_parquet(pl.DataFrame(trainer.state["log"]), out / LOG_TABLE)
    checksums.record(out, [*written, LOG_TABLE], target=out / written[-1])  # its job's cfg.json
    (out / CHECKPOINT).unlink(missing_ok=True)
    last = trainer.state["log"][-1]
    log.info(
        "done: %d steps in %.1f s; fvu %.4f, l0 %.1f, dead %.3f",
        trainer.n_steps,
        seconds,
        last["fvu"],
        last["l0"],
        last["dead_fraction"],
    )
    return {"steps": trainer.n_steps, "seconds": seconds, "final": last}


def training_form(sae):
    """A saved SAE (weights with the input scale folded in, `workflow.sae.load`) back in its
    training form: the scale unfolded, so training can go on where it stopped (stage-wise
    fine-tuning). Thresholds compare pre-activations, which folding leaves unchanged."""
    import torch

    s = float(sae.cfg.get("metadata", {}).get("activation_scale", 1.0))
    with torch.no_grad():
        sae.W_enc /= s
        sae.W_dec *= s
        sae.b_dec *= s
        sae.scale.fill_(s)
    return sae
