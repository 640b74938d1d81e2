"""Stage `crosscoder`: a BatchTopK acausal crosscoder on both variants' activations of one
(model, dataset, site, layer), and what it says about each latent.

Trained (`workflow.sae.training`, the SAE trainer: shuffled stream, lr schedule, AuxK, resumable
checkpoints) on the two variants' train-split activation sets read side by side
(`workflow.store.activations.PairedSets`: row i of both is the same token), then analysed on the
test split (`workflow.analysis.crosscoding`: relative decoder norm and class, the two decoders'
cosine, latent scaling, frequency; FVU per side, L0, dead fraction).

Output: ``crosscoder_weights.safetensors`` + ``cfg.json`` (`workflow.sae.crosscoder` documents
the tensors; `workflow.sae.crosscoder.load` reads them back), ``training_log.parquet``,
``latents.parquet`` (one row per latent) and ``crosscoder.json`` (quality and class counts).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from workflow import cli, layout
from workflow.analysis import crosscoding
from workflow.layout import VARIANTS
from workflow.models.loading import pick_device
from workflow.sae.crosscoder import CrosscoderRecipe, load
from workflow.sae.training import train
from workflow.store.activations import ActivationSet, PairedSets
from workflow.store.files import write_json, write_parquet


def run(train_acts: dict, test_acts: dict, recipe: dict, name: str, cfg: dict, source: str, out: str) -> dict:
    """train_acts, test_acts: {variant: activation set folder}; cfg: the `crosscoder` section plus
    the diff's retained_cosine."""
    started = time.perf_counter()
    device = pick_device()
    paired = PairedSets(*(ActivationSet(train_acts[v]) for v in VARIANTS))
    manifest = paired.sets[0].manifest
    metadata = {
        "model_name": source,
        "hook_name": manifest["hook_name"],
        "study": {k: manifest.get(k) for k in ("model", "dataset", "site", "layer")} | {"crosscoder": name},
    }
    training = train(paired, CrosscoderRecipe.from_dict(recipe), out, metadata, device)
    cc = load(out, device)
    test = PairedSets(*(ActivationSet(test_acts[v]) for v in VARIANTS))
    stats = crosscoding.statistics(cc, test, cfg["max_tokens"], cfg["batch_rows"], device)
    table = crosscoding.latent_table(cc, stats, cfg)
    names = layout.CROSSCODER.names
    write_parquet(table, Path(out) / names["latents"])
    live = table.filter(table["frequency"] > 0)
    summary = {
        **metadata["study"],
        "d_sae": cc.d_sae,
        "n_tokens": stats["n_tokens"],
        "fvu": stats["fvu"],
        "explained_variance": {v: 1 - f for v, f in stats["fvu"].items()},
        "l0": stats["l0"],
        "dead_fraction": stats["dead_fraction"],
        "classes": {c: int((live["class"] == c).sum()) for c in crosscoding.CLASSES},
        "robust": {
            c: int((live["robust"] & (live["class"] == c)).sum()) for c in ("pretrained_only", "finetuned_only")
        },
        "categories": {c: int((table["category"] == c).sum()) for c in ("kept", "changed", "removed", "new", "dead")},
        "shared_decoder_cos_median": float(np.nanmedian(live.filter(live["class"] == "shared")["decoder_cos"]))
        if (live["class"] == "shared").any()
        else None,
        "thresholds": cfg,
        "sign_convention": "relative norm > 0.5: the fine-tuned side's decoder is the larger",
        "train": {"steps": training["steps"], "seconds": training["seconds"], "final": training["final"]},
        "seconds": time.perf_counter() - started,
    }
    write_json(summary, Path(out) / names["summary"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    for v in VARIANTS:
        parser.add_argument(f"--{v}-train", required=True, help=f"train-split activation set of the {v} model")
        parser.add_argument(f"--{v}-test", required=True, help=f"test-split activation set of the {v} model")
    cli.add_config(parser, "crosscoder recipe", "--recipe")
    parser.add_argument("--name", required=True, help="the recipe's name in the config")
    cli.add_config(parser, "crosscoder section (with the diff's retained_cosine)")
    parser.add_argument("--source", required=True, help="model source, recorded as metadata.model_name")
    parser.add_argument("--out", required=True)
    args = vars(parser.parse_args(argv))
    run(
        {v: args[f"{v}_train"] for v in VARIANTS},
        {v: args[f"{v}_test"] for v in VARIANTS},
        args["recipe"],
        args["name"],
        args["config"],
        args["source"],
        args["out"],
    )
