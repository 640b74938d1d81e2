"""Stage `train_sae`: one sparse autoencoder on one activation set (train split).

Batches stream from the memmapped shards through a seeded shuffle buffer
(`sae.stream`); inputs are scaled to mean squared norm d_in; b_dec starts at
the geometric median of a sample (or the mean, or zero); the lr warms up
linearly, holds, then decays linearly to zero. Dead latents (no firing for
`dead_tokens` training tokens) are tracked and feed AuxK in the TopK family.
Every `checkpoint_every` steps the full training state is saved beside the
output; a re-run of an interrupted job resumes from it and ends with the same
weights as an uninterrupted run. A non-finite loss stops the job with an error
that names the step. Output: the SAELens folder (sae_weights.safetensors,
cfg.json) and training_log.parquet.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import io
from workflow.config import code_version
from workflow.sae import create
from workflow.sae.base import geometric_median, lr_at
from workflow.sae.losses import adapt_coefficient
from workflow.sae.stream import ShuffledRows

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG_TABLE = "training_log.parquet"
B_DEC_SAMPLE = 16384  # rows for the geometric median


class NonFiniteError(RuntimeError):
    pass


def autocast_dtype(setting: str, device):
    import torch

    if setting == "float32":
        return None
    if setting == "bfloat16":
        return torch.bfloat16
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.cpu._is_avx512_bf16_supported()
    return torch.bfloat16 if native else None


def _fingerprint(recipe: dict, aset: io.ActivationSet) -> str:
    """What a checkpoint must match to be resumed: recipe, data and trainer code."""
    data = {k: aset.manifest.get(k) for k in ("n_rows", "d_model", "mean_sq_norm", "hook_name", "model", "variant", "dataset")}
    blob = json.dumps([recipe, data, code_version("train_sae", recipe["architecture"])], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _sparsity_coefficient(recipe: dict) -> float:
    return float(recipe.get("l1_coefficient") or recipe.get("l0_coefficient") or 0.0)


def initial_sae(recipe: dict, d_in: int, b_dec=None):
    """The SAE before training: a function of the recipe's seed only, so the pretrained and
    fine-tuned SAEs of a recipe start from the same weights (`diff` reports how far each moved)."""
    import torch

    torch.manual_seed(recipe["seed"])
    sae = create(recipe, d_in)
    sae.initialise(torch.Generator().manual_seed(recipe["seed"]), b_dec, getattr(sae, "initial_decoder_norm", 1.0))
    return sae


def train(acts_folder: str, recipe: dict, out_folder: str, metadata: dict, device=None) -> dict:
    import torch

    from workflow import models

    device = device or models.pick_device()
    aset = io.ActivationSet(acts_folder)
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    d_in = aset.d_model
    batch_size, seed = recipe["batch_size"], recipe["seed"]
    n_steps = max(1, math.ceil(recipe["train_tokens"] / batch_size))
    stream = ShuffledRows(aset, batch_size, seed, recipe["shuffle_buffer"])
    scale = math.sqrt(d_in / aset.manifest["mean_sq_norm"]) if recipe["normalize"] else 1.0
    amp = autocast_dtype(recipe["dtype"], device)

    sample = torch.from_numpy(stream.sample(B_DEC_SAMPLE)) * scale
    b_dec = {"geometric_median": lambda: geometric_median(sample), "mean": lambda: sample.mean(0),
             "zeros": lambda: torch.zeros(d_in)}[recipe["b_dec_init"]]()
    sae = initial_sae(recipe, d_in, b_dec)
    sae.scale.fill_(scale)
    sae.to(device).train()
    optimizer = torch.optim.Adam(sae.parameters(), lr=recipe["lr"], betas=tuple(recipe["adam_betas"]))

    fingerprint = _fingerprint(recipe, aset)
    base_coefficient = _sparsity_coefficient(recipe)
    state = {"step": 0, "coefficient": base_coefficient, "since_fired": torch.zeros(sae.d_sae, dtype=torch.long),
             "log": [], "seconds": 0.0}
    checkpoint = out / CHECKPOINT
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            sae.load_state_dict(saved["model"])
            sae.load_extra_state(saved["extra"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            log.info("resuming from %s at step %d/%d", checkpoint, state["step"], n_steps)
        else:
            log.info("ignoring %s: written for another recipe, data set or trainer version", checkpoint)
    since_fired = state["since_fired"].to(device)

    log.info("device: %s; %s %s -> %s: d_in %d, d_sae %d, %d steps x %d tokens (%d rows in set), scale %.4g, autocast %s",
             models.describe_device(device), recipe["architecture"], acts_folder, out, d_in, sae.d_sae, n_steps,
             batch_size, aset.n_rows, scale, amp)
    started, tokens_done = time.perf_counter(), 0
    warm_steps = math.ceil(recipe.get("sparsity_warmup_fraction", 0) * n_steps)
    batches = stream.batches(state["step"])
    for step in range(state["step"], n_steps):
        x = torch.from_numpy(next(batches)).to(device) * scale
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"{acts_folder}: non-finite activations in the batch of step {step} "
                                 "(float16 overflow? extract with dtype: float32)")
        lr = lr_at(step, n_steps, recipe["lr"], recipe["warmup_fraction"], recipe["decay_fraction"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        coefficient = state["coefficient"]
        if recipe.get("target_l0") is None and warm_steps:
            coefficient = base_coefficient * min(1.0, (step + 1) / warm_steps)
        dead = since_fired >= recipe["dead_tokens"]
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss, terms, fired = sae.training_loss(x, {"dead_mask": dead, "coefficient": coefficient})
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"{out}: loss is {float(loss)} at step {step} ({', '.join(f'{k}={float(v):.4g}' for k, v in terms.items())}); "
                f"lower lr (now {lr:.3g}) or check the activations in {acts_folder}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        sae.before_step()
        optimizer.step()
        sae.after_step()
        since_fired += len(x)
        since_fired[fired] = 0
        if recipe.get("target_l0") is not None:
            state["coefficient"] = adapt_coefficient(state["coefficient"], float(terms["l0"]), recipe["target_l0"])
        tokens_done += len(x)
        done = step + 1
        if done % recipe["log_every"] == 0 or done == n_steps:
            elapsed = state["seconds"] + time.perf_counter() - started
            row = {"step": done, "tokens": done * batch_size, "lr": lr, "loss": float(loss.detach()),
                   **{k: float(v) for k, v in terms.items()},
                   "dead_fraction": float((since_fired >= recipe["dead_tokens"]).float().mean()),
                   "tokens_per_s": tokens_done / (time.perf_counter() - started)}
            state["log"].append(row)
            log.info("step %d/%d  %.0f tokens/s  loss %.4f  %s  dead %.3f  lr %.2e", done, n_steps, row["tokens_per_s"],
                     row["loss"], "  ".join(f"{k} {row[k]:.4g}" for k in terms), row["dead_fraction"], lr)
        if done % recipe["checkpoint_every"] == 0 and done < n_steps:
            state.update(step=done, since_fired=since_fired.cpu(),
                         seconds=state["seconds"] + time.perf_counter() - started)
            started, tokens_done = time.perf_counter(), 0
            with io.atomic_path(checkpoint) as tmp:
                torch.save({"fingerprint": fingerprint, "model": sae.state_dict(), "extra": sae.extra_state(),
                            "optimizer": optimizer.state_dict(), "state": state}, tmp)
    seconds = state["seconds"] + time.perf_counter() - started
    sae.cpu().eval()
    sae.save(out, metadata)
    table = pl.DataFrame(state["log"])
    io.write_parquet(table, out / LOG_TABLE)
    checkpoint.unlink(missing_ok=True)
    last = state["log"][-1]
    log.info("done: %d steps in %.1f s; fvu %.4f, l0 %.1f, dead %.3f", n_steps, seconds, last["fvu"], last["l0"],
             last["dead_fraction"])
    return {"steps": n_steps, "seconds": seconds, "final": last}


def saelens_metadata(manifest: dict, source: str, family: str, max_length: int, sae_name: str) -> dict:
    """cfg.json `metadata`: provenance in SAELens' keys, plus ours."""
    layer = manifest["layer"]
    return {
        "model_name": source,
        "hook_name": manifest["hook_name"],
        "hook_layer": max(layer - 1, 0),  # SAEBench's custom-SAE loader reads it
        "context_size": max_length,
        "prepend_bos": family == "bert",  # [CLS] opens every BERT input
        "dataset_path": manifest.get("dataset"),
        "sae_lens_training_version": None,
        "study": {k: manifest.get(k) for k in ("model", "variant", "dataset", "split", "site", "layer")} | {"sae": sae_name},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow train_sae", description=__doc__.splitlines()[0])
    parser.add_argument("--acts", required=True, help="activation set folder (train split)")
    parser.add_argument("--recipe", required=True, help="the SAE recipe as JSON")
    parser.add_argument("--name", required=True, help="the recipe's name in the config")
    parser.add_argument("--source", required=True, help="model source, recorded as metadata.model_name")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--out", required=True, help="SAE folder")
    args = parser.parse_args(argv)
    recipe = json.loads(args.recipe)
    manifest = io.ActivationSet(args.acts).manifest
    from workflow import models

    family = models.model_family(models.read_model_config(models.resolve_source(args.source)))
    train(args.acts, recipe, args.out, saelens_metadata(manifest, args.source, family, args.max_length, args.name))
