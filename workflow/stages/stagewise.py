"""Stage `stagewise`: stage-wise SAE fine-tuning of one (model, dataset, site, layer, recipe).

The pretrained variant's SAE keeps training on the fine-tuned variant's train activations for
`steps` steps (the recipe's batch size and decay, no warmup, its lr or `lr`; the input scale of
the pretrained SAE is kept, so both SAEs read activations the same way). Feature j before and
after is the same latent: `workflow.analysis.stagewise` records, per feature, the decoder and
encoder cosines to the start, the firing frequency and mean activation of the start SAE on
pretrained and of the end SAE on fine-tuned activations of the same test tokens, and a category.

Output: the end SAE (a SAELens folder, like every SAE here), ``movement.parquet`` (one row per
feature) and ``stagewise.json`` (category counts, the median cosines, the features that moved most).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from workflow import layout
from workflow.analysis.matching import outlier_limit
from workflow.analysis.stagewise import movement_summary, movement_table
from workflow.layout import VARIANTS
from workflow.models.loading import autocast_dtype, pick_device
from workflow.runner import cli
from workflow.runner.codehash import code_version
from workflow.sae import load, recipe_from_dict
from workflow.sae.training import train, training_form
from workflow.store.activations import ActivationSet
from workflow.store.files import write_json, write_parquet

N_MOVED = 20  # features that moved most, listed in stagewise.json


def run(sae_dir: str, train_acts: str, test_acts: dict, cfg: dict, out: str) -> dict:
    """sae_dir: the pretrained SAE; train_acts: the fine-tuned variant's train set; test_acts:
    {variant: test set}; cfg: the `stagewise` section plus the diff's thresholds."""
    started = time.perf_counter()
    device = pick_device()
    start = training_form(load(sae_dir))
    meta = start.cfg["metadata"]
    recipe = recipe_from_dict({**meta["recipe"], "architecture": meta["architecture"]})
    recipe = dataclasses.replace(
        recipe, train_tokens=cfg["steps"] * recipe.batch_size, lr=cfg["lr"] or recipe.lr, warmup_fraction=0.0
    )
    weights = Path(sae_dir) / layout.SAE.names["weights"]
    start_id = hashlib.sha256(weights.read_bytes()).hexdigest()
    study = {**meta.get("study", {}), "variant": "finetuned", "stagewise_from": str(sae_dir), "steps": cfg["steps"]}
    how = {"amp": autocast_dtype(recipe.dtype, device), "code": code_version("train_sae", recipe.architecture)}
    training = train(train_acts, recipe, out, {**meta, "study": study}, device, start=start, start_id=start_id, **how)
    first, end = load(sae_dir, device), load(out, device)
    sets = {v: ActivationSet(test_acts[v]) for v in VARIANTS}
    limits = {
        v: outlier_limit(sets[v], cfg["outlier_norm_factor"], cfg["max_tokens"], cfg["batch_rows"]) for v in VARIANTS
    }
    table = movement_table(first, end, sets["pretrained"], sets["finetuned"], cfg, limits, device)
    names = layout.STAGEWISE.names
    write_parquet(table, Path(out) / names["movement"])
    summary = {
        **{k: study.get(k) for k in ("model", "dataset", "site", "layer", "sae")},
        "steps": cfg["steps"],
        **movement_summary(table, N_MOVED),
        "thresholds": cfg,
        "train": {"steps": training["steps"], "seconds": training["seconds"], "final": training["final"]},
        "seconds": time.perf_counter() - started,
    }
    write_json(summary, Path(out) / names["summary"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--sae", required=True, help="the pretrained variant's SAE folder")
    parser.add_argument("--train-acts", required=True, help="train-split activation set of the fine-tuned model")
    for v in VARIANTS:
        parser.add_argument(f"--{v}-test", required=True, help=f"test-split activation set of the {v} model")
    cli.add_config(parser, "stagewise section (with the diff's thresholds)")
    parser.add_argument("--out", required=True)
    args = vars(parser.parse_args(argv))
    run(args["sae"], args["train_acts"], {v: args[f"{v}_test"] for v in VARIANTS}, args["config"], args["out"])
