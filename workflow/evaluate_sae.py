"""Stage `evaluate_sae`: quality of one SAE on held-out tokens.

Reconstruction, on the test split's activation set (raw activations; the saved
SAE has its input scale folded in):

- ``mse`` (mean over tokens and dimensions), ``explained_variance`` = 1 - FVU
  with FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens;
- ``cosine`` and ``l2_ratio`` (||x_hat|| / ||x||), means over tokens;
- ``l0`` and ``l1`` (mean active latents / summed activation per token);
- ``dead_fraction`` (latents that never fire on these tokens) and
  ``dense_fraction`` (latents firing on more than `dense_threshold` of them);
  per-latent log10 firing frequency goes to sparsity.safetensors (SAELens key
  ``sparsity``; never-firing latents get -10).

Downstream, on the test documents: the task classifier of the SAE's variant
(fine-tuned: the fine-tuned model; pretrained: the pretrained body with a
fitted linear head, stage `linear_head`) is run clean, with the SAE
reconstruction spliced in at the SAE's (site, layer), and with that activation
zero-ablated. ``loss_recovered`` = (L_zero - L_spliced) / (L_zero - L_clean);
``kl`` is the mean KL(clean || spliced) of the output distributions. Models
with a language-model head (GPT-2) get the same for next-token loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from workflow import io, models, sae as saes
from workflow.codes import encode_batches
from workflow.reconstruction import Reconstruction
from workflow.splice import Splice, through_sae, zeros_except_outliers
from workflow.tokenize import batches, read_documents

log = logging.getLogger(__name__)

SPARSITY = "sparsity.safetensors"


def reconstruction(sae, aset: io.ActivationSet, max_tokens: int | None, batch_rows: int, dense_threshold: float, device) -> tuple[dict, np.ndarray]:
    import torch

    stats = Reconstruction(sae.d_in, sae.d_sae)
    for _, x, acts in encode_batches(sae, aset, max_tokens, batch_rows, device):
        with torch.inference_mode():
            stats.update(x, acts, sae.decode(acts))
    return stats.result(dense_threshold), stats.frequency()


def _spliced_runs(model, base, site: str, layer: int, saes: dict, inputs: dict, max_norm: float | None) -> dict:
    """Logits clean, zero-ablated and with each SAE spliced in ("spliced:<name>"); outlier-norm
    positions above `max_norm`, if given, keep their clean value when spliced or ablated."""
    runs = {"clean": model(**inputs).logits.float()}
    with Splice(base, site, layer, zeros_except_outliers(max_norm)):
        runs["zero"] = model(**inputs).logits.float()
    for name, sae in saes.items():
        with Splice(base, site, layer, through_sae(sae, max_norm)):
            runs[f"spliced:{name}"] = model(**inputs).logits.float()
    return runs


def _summaries(sums: dict, names, n: int) -> dict:
    """Per SAE: mean clean / spliced / zero losses (and accuracies, KL), and loss recovered."""
    out = {}
    for name in names:
        mean = {k.replace(f":{name}", ""): v / n for k, v in sums.items() if ":" not in k or k.endswith(f":{name}")}
        gap = mean["loss_zero"] - mean["loss_clean"]
        mean["loss_recovered"] = (mean["loss_zero"] - mean["loss_spliced"]) / gap if abs(gap) > 1e-12 else float("nan")
        out[name] = mean
    return out


def task_effects(classifier_dir: str, docs, site: str, layer: int, saes: dict, batch_size: int, device,
                 max_norm: float | None = None) -> dict:
    """Task loss and accuracy of a classifier clean, zero-ablated and with each SAE of `saes` spliced in."""
    import torch
    import torch.nn.functional as F

    pad_id = models.pad_token_id(classifier_dir)
    model = models.load_classifier(classifier_dir, _num_labels(classifier_dir), pad_id, device).eval()
    sums: dict[str, float] = {}
    with torch.inference_mode():
        order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
        for idx, inputs in batches(docs, batch_size, pad_id, order):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            labels = torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)
            runs = _spliced_runs(model, model.base_model, site, layer, saes, inputs, max_norm)
            clean_logp = runs["clean"].log_softmax(-1)
            for run_name, logits in runs.items():
                kind, _, name = run_name.partition(":")
                suffix = f":{name}" if name else ""
                _add(sums, f"loss_{kind}{suffix}", float(F.cross_entropy(logits, labels, reduction="sum")))
                _add(sums, f"accuracy_{kind}{suffix}", float((logits.argmax(-1) == labels).sum()))
                if name:
                    _add(sums, f"kl:{name}", float(F.kl_div(logits.log_softmax(-1), clean_logp, log_target=True, reduction="sum")))
    n = len(docs.labels)
    return {name: {"model": classifier_dir, **summary, "n_docs": int(n)} for name, summary in _summaries(sums, saes, n).items()}


def task_effect(classifier_dir: str, docs, site: str, layer: int, sae, batch_size: int, device) -> dict:
    return task_effects(classifier_dir, docs, site, layer, {"sae": sae}, batch_size, device)["sae"]


def _add(sums: dict, key: str, value: float) -> None:
    sums[key] = sums.get(key, 0.0) + value


def _num_labels(folder: str) -> int:
    return len(json.loads((Path(folder) / "config.json").read_text())["id2label"])


def lm_effects(source: str, docs, site: str, layer: int, saes: dict, batch_size: int, device,
               max_norm: float | None = None) -> dict:
    """Next-token loss of a causal LM (GPT-2 family) clean, zero-ablated and with each SAE spliced in."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    pad_id = models.pad_token_id(source)
    model = AutoModelForCausalLM.from_pretrained(source).to(device).eval()
    model.config.use_cache = False
    sums: dict[str, float] = {}
    n = 0
    with torch.inference_mode():
        order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
        for idx, inputs in batches(docs, batch_size, pad_id, order):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            mask = inputs["attention_mask"][:, 1:].bool()
            targets = inputs["input_ids"][:, 1:][mask]
            runs = _spliced_runs(model, model.base_model, site, layer, saes, inputs, max_norm)
            logp = {k: v[:, :-1][mask].log_softmax(-1) for k, v in runs.items()}
            for run_name, lp in logp.items():
                kind, _, name = run_name.partition(":")
                _add(sums, f"loss_{kind}" + (f":{name}" if name else ""), float(F.nll_loss(lp, targets, reduction="sum")))
                if name:
                    _add(sums, f"kl:{name}", float(F.kl_div(lp, logp["clean"], log_target=True, reduction="sum")))
            n += int(mask.sum())
    return {name: {"model": source, **summary, "n_tokens": n} for name, summary in _summaries(sums, saes, max(n, 1)).items()}


def lm_effect(source: str, docs, site: str, layer: int, sae, batch_size: int, device) -> dict:
    return lm_effects(source, docs, site, layer, {"sae": sae}, batch_size, device)["sae"]


def run(sae_dir: str, acts_dir: str, tokens_path: str, classifier_dir: str, lm_source: str | None, cfg: dict) -> dict:
    import torch
    from safetensors.torch import save_file

    started = time.perf_counter()
    device = models.pick_device()
    sae = saes.load(sae_dir, device)
    meta = sae.cfg["metadata"]["study"]
    site, layer = meta["site"], meta["layer"]
    aset = io.ActivationSet(acts_dir)
    if aset.d_model != sae.d_in:
        raise ValueError(f"{acts_dir}: d_model {aset.d_model} does not match the SAE's d_in {sae.d_in} ({sae_dir})")
    metrics, freq = reconstruction(sae, aset, cfg["max_tokens"], cfg["batch_rows"], cfg["dense_threshold"], device)
    log.info("%s on %s (%d tokens): FVU %.4f, L0 %.1f, dead %.3f, dense %.3f, cosine %.4f", sae_dir, acts_dir,
             metrics["n_tokens"], metrics["fvu"], metrics["l0"], metrics["dead_fraction"], metrics["dense_fraction"],
             metrics["cosine"])
    docs = read_documents(tokens_path).sample(max_docs=cfg["max_docs"], seed=0)
    downstream = {"task": task_effect(classifier_dir, docs, site, layer, sae, cfg["batch_size"], device)}
    log.info("task: loss clean %.4f spliced %.4f zero %.4f -> recovered %.3f; accuracy %.3f / %.3f / %.3f",
             *(downstream["task"][k] for k in ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered",
                                              "accuracy_clean", "accuracy_spliced", "accuracy_zero")))
    if lm_source:
        downstream["lm"] = lm_effect(lm_source, docs, site, layer, sae, cfg["batch_size"], device)
        log.info("lm: loss clean %.4f spliced %.4f zero %.4f -> recovered %.3f, KL %.4f",
                 *(downstream["lm"][k] for k in ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered", "kl")))
    result = {
        "sae": sae_dir,
        "architecture": sae.name,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "hook_name": sae.cfg["metadata"]["hook_name"],
        **{k: v for k, v in meta.items() if k != "split"},  # the SAE trained on train; this is the test split
        "eval_split": "test",
        "activations": acts_dir,
        **metrics,
        "downstream": downstream,
        "device": models.describe_device(device),
        "seconds": time.perf_counter() - started,
    }
    with io.atomic_path(f"{sae_dir}/{SPARSITY}") as tmp:
        save_file({"sparsity": torch.from_numpy(np.log10(np.maximum(freq, 1e-10))).float()}, str(tmp))
    io.write_json(_finite(result), f"{sae_dir}/eval.json")
    return result


def _finite(obj):
    """JSON has no NaN: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow evaluate_sae", description=__doc__.splitlines()[0])
    parser.add_argument("--sae", required=True, help="SAE folder (cfg.json, sae_weights.safetensors)")
    parser.add_argument("--acts", required=True, help="held-out activation set of the same (site, layer)")
    parser.add_argument("--tokens", required=True, help="tokens table of the held-out split")
    parser.add_argument("--classifier", required=True, help="task classifier folder of the SAE's variant")
    parser.add_argument("--lm", help="causal LM source of the SAE's variant (GPT-2 family)")
    parser.add_argument("--config", required=True, help="the evaluation config as JSON")
    args = parser.parse_args(argv)
    run(args.sae, args.acts, args.tokens, args.classifier, args.lm, json.loads(args.config))
