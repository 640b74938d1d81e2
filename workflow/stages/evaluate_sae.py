"""Stage `evaluate_sae`: quality of one SAE on held-out tokens.

Reconstruction, on the test split's activation set (raw activations; the saved
SAE has its input scale folded in; `workflow.sae.metrics`):

- ``mse`` (mean over tokens and dimensions), ``explained_variance`` = 1 - FVU
  with FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over the tokens;
- ``cosine`` and ``l2_ratio`` (||x_hat|| / ||x||), means over tokens;
- ``l0`` and ``l1`` (mean active latents / summed activation per token); ``l0_warning`` where L0
  is more than 25% away from the recipe's k or target_l0 (also in the log and the report), else null;
- ``dead_fraction`` (latents that never fire on these tokens) and
  ``dense_fraction`` (latents firing on more than `dense_threshold` of them);
  per-latent log10 firing frequency goes to sparsity.safetensors (SAELens key
  ``sparsity``; never-firing latents get -10).

Downstream, on the test documents (`workflow.analysis.splices`): the task
classifier of the SAE's variant (fine-tuned: the fine-tuned model; pretrained:
the pretrained body with a classifier fitted on its frozen features, stage
`frozen_classifier`) is run clean, with the SAE reconstruction spliced in at
the SAE's (site, layer), and with that activation zero-ablated.
``loss_recovered`` = (L_zero - L_spliced) / (L_zero - L_clean); ``kl`` is the
mean KL(clean || spliced) of the output distributions, ``kl_recovered`` =
(KL_zero - KL_spliced) / KL_zero. Checkpoints with a language-model head get the
same for it: next-token loss for decoders, masked-token loss for encoders with
an MLM head (`workflow.analysis.splices`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from workflow import layout
from workflow.analysis.splices import lm_effects, task_effects
from workflow.models.loading import describe_device, pick_device
from workflow.runner import cli
from workflow.sae import load
from workflow.sae.metrics import l0_warning, measure
from workflow.store.activations import ActivationSet
from workflow.store.files import atomic_path, write_json
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


TASK_LOG = ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered", "accuracy_clean", "accuracy_spliced")
LM_LOG = ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered", "kl", "kl_zero", "kl_recovered")


def downstream(
    sae, docs, site: str, layer: int, classifier_dir: str | None, lm: dict | None, cfg: dict, device
) -> dict:
    """Task and LM loss with the SAE spliced in, against clean and zero-ablated: the task where the
    data is labelled (a classifier is given), the LM where the model has one."""
    result = {}
    if classifier_dir:
        result["task"] = task_effects(classifier_dir, docs, site, layer, {"sae": sae}, cfg["batch_size"], device)["sae"]
        log.info(
            "task: loss clean %.4f spliced %.4f zero %.4f -> recovered %.3f; accuracy %.3f / %.3f",
            *(result["task"][k] for k in TASK_LOG),
        )
    if lm:
        result["lm"] = lm_effects(lm, docs, site, layer, {"sae": sae}, cfg["batch_size"], device)["sae"]
        log.info(
            "lm (%s): loss clean %.4f spliced %.4f zero %.4f -> recovered %.3f; KL %.4f (zero %.4f) -> recovered %.3f",
            lm["kind"],
            *(result["lm"][k] for k in LM_LOG),
        )
    return result


def run(sae_dir: str, acts_dir: str, tokens_path: str, classifier_dir: str | None, lm: dict | None, cfg: dict) -> dict:
    import torch
    from safetensors.torch import save_file

    started = time.perf_counter()
    device = pick_device()
    sae = load(sae_dir, device)
    meta = sae.cfg["metadata"]["study"]
    aset = ActivationSet(acts_dir)
    if aset.d_model != sae.d_in:
        raise ValueError(f"{acts_dir}: d_model {aset.d_model} does not match the SAE's d_in {sae.d_in} ({sae_dir})")
    stats, _ = measure(sae, aset, cfg["max_tokens"], cfg["batch_rows"], device)
    metrics, freq = stats.result(cfg["dense_threshold"]), stats.frequency()
    log.info(
        "%s on %s (%d tokens): FVU %.4f, L0 %.1f, dead %.3f, dense %.3f, cosine %.4f",
        sae_dir,
        acts_dir,
        metrics["n_tokens"],
        metrics["fvu"],
        metrics["l0"],
        metrics["dead_fraction"],
        metrics["dense_fraction"],
        metrics["cosine"],
    )
    recipe = sae.cfg["metadata"].get("recipe") or {}
    if warning := l0_warning(recipe, metrics["l0"]):
        log.warning("%s: %s", sae_dir, warning)
    docs = read_documents(tokens_path).sample(max_docs=cfg["max_docs"], seed=0)
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
        "l0_warning": warning,
        "downstream": downstream(sae, docs, meta["site"], meta["layer"], classifier_dir, lm, cfg, device),
        "device": describe_device(device),
        "seconds": time.perf_counter() - started,
    }
    sparsity = np.log10(np.maximum(freq, 1e-10))
    with atomic_path(Path(sae_dir) / layout.SAE.names["sparsity"]) as tmp:
        save_file({"sparsity": torch.from_numpy(sparsity).float()}, str(tmp))
    write_json(result, Path(sae_dir) / layout.SAE.names["eval"])
    return result


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--sae", required=True, help="SAE folder (cfg.json, sae_weights.safetensors)")
    parser.add_argument("--acts", required=True, help="held-out activation set of the same (site, layer)")
    parser.add_argument("--tokens", required=True, help="tokens table of the held-out split")
    parser.add_argument("--classifier", help="task classifier folder of the SAE's variant (labelled data)")
    cli.add_lm(parser, whose="the SAE's variant")
    cli.add_config(parser, "evaluation config (sae_eval)")
    cli.add_load(parser)
    args = cli.parse_model_job(parser, argv)
    run(args.sae, args.acts, args.tokens, args.classifier, args.lm, args.config)
