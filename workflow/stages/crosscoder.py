"""Stage `crosscoder`: a BatchTopK acausal crosscoder on both variants' activations of one
(model, dataset, site, layer), and what it says about each latent.

Trained (`workflow.sae.training`, the SAE trainer: shuffled stream, lr schedule, AuxK, resumable
checkpoints) on the two variants' train-split activation sets read side by side
(`workflow.store.activations.PairedSets`: row i of both is the same token), then analysed on the
test split (`workflow.analysis.crosscoding`: relative decoder norm and class, the two decoders'
cosine, latent scaling, frequency; FVU per side, L0, dead fraction). Each side is then spliced
into its own variant on the test documents (`workflow.analysis.splices.crosscoder_effects`: task
and LM loss recovered, as `evaluate_sae` gives them for an SAE).

Output: ``crosscoder_weights.safetensors`` + ``cfg.json`` (`workflow.sae.crosscoder` documents
the tensors; `workflow.sae.crosscoder.load` reads them back), ``training_log.parquet``,
``latents.parquet`` (one row per latent), ``crosscoder.json`` (quality, class counts, splice), and
what each latent responds to as the features stage gives it for an SAE (``features.parquet``,
``examples.parquet`` with each variant's contribution per example token, ``features.json``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from workflow import layout
from workflow.analysis import crosscoding
from workflow.analysis.features import read_tokens
from workflow.analysis.splices import crosscoder_effects
from workflow.layout import VARIANTS
from workflow.models.loading import autocast_dtype, describe_device, pick_device
from workflow.runner import cli
from workflow.runner.codehash import code_version
from workflow.sae.crosscoder import CrosscoderRecipe, load
from workflow.sae.training import train
from workflow.store.activations import ActivationSet, PairedSets
from workflow.store.files import read_json, write_json, write_parquet
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


def latent_features(cc, test: PairedSets, tokens_path: str, meta_path: str, cfg: dict, out: Path, device) -> dict:
    """What each latent responds to on the test tokens (`crosscoding.latent_features`), written beside
    the crosscoder as the features stage writes it for an SAE."""
    tokens = read_tokens(tokens_path)
    if len(tokens) != test.n_rows:
        raise ValueError(f"{tokens_path}: {len(tokens)} rows, but the activation sets {test.folder} have {test.n_rows}")
    meta = read_json(meta_path)
    labels, concepts = meta["label_names"], meta.get("concepts") or []
    table, examples, summary = crosscoding.latent_features(cc, test, tokens, labels, concepts, cfg, device)
    names = layout.CROSSCODER.names
    write_parquet(table, out / names["features"])
    write_parquet(examples, out / names["examples"])
    write_json(summary, out / names["features_summary"])
    return summary


def downstream(cc, tokens: str, site: str, layer: int, models: dict, eval_cfg: dict, device) -> dict:
    """Each side spliced into its variant on (a sample of) the test documents."""
    docs = read_documents(tokens).sample(max_docs=eval_cfg["max_docs"], seed=0)
    return crosscoder_effects(cc, docs, site, layer, models["classifier"], models["lm"], eval_cfg["batch_size"], device)


def run(
    train_acts: dict,
    test_acts: dict,
    recipe: dict,
    name: str,
    cfg: dict,
    source: str,
    out: str,
    tokens: str | None = None,
    models: dict | None = None,
    eval_cfg: dict | None = None,
    meta: str | None = None,
    features_cfg: dict | None = None,
) -> dict:
    """train_acts, test_acts: {variant: activation set folder}; cfg: the `crosscoder` section plus
    the diff's retained_cosine. With `tokens` (the test split's table), `models` ({"classifier":
    {variant: folder}, "lm": {variant: spec}}) and `eval_cfg` (the sae_eval section), each side is
    spliced into its variant; with `tokens`, `meta` (the dataset's meta.json) and `features_cfg` (the
    features section), what each latent responds to is written beside it (`latent_features`)."""
    started = time.perf_counter()
    device = pick_device()
    paired = PairedSets(*(ActivationSet(train_acts[v]) for v in VARIANTS))
    manifest = paired.sets[0].manifest
    metadata = {
        "model_name": source,
        "hook_name": manifest["hook_name"],
        "study": {k: manifest.get(k) for k in ("model", "dataset", "site", "layer")} | {"crosscoder": name},
    }
    typed = CrosscoderRecipe.from_dict(recipe)
    amp, code = autocast_dtype(typed.dtype, device), code_version("train_sae", typed.architecture)
    training = train(paired, typed, out, metadata, device, amp=amp, code=code)
    cc = load(out, device)
    test = PairedSets(*(ActivationSet(test_acts[v]) for v in VARIANTS))
    stats = crosscoding.statistics(cc, test, cfg["max_tokens"], cfg["batch_rows"], device)
    table = crosscoding.latent_table(cc, stats, cfg)
    names = layout.CROSSCODER.names
    write_parquet(table, Path(out) / names["latents"])
    if tokens and meta and features_cfg:
        latent_features(cc, test, tokens, meta, features_cfg, Path(out), device)
    summary = {
        **metadata["study"],
        **crosscoding.quality(cc, stats, table, recipe),
        "downstream": downstream(cc, tokens, manifest["site"], int(manifest["layer"]), models, eval_cfg, device)
        if tokens and models
        else {},
        "thresholds": cfg,
        "sign_convention": "relative norm > 0.5: the fine-tuned side's decoder is the larger",
        "train": {"steps": training["steps"], "seconds": training["seconds"], "final": training["final"]},
        "device": describe_device(device),
        "seconds": time.perf_counter() - started,
    }
    if summary["l0_warning"]:
        log.warning("%s: %s", out, summary["l0_warning"])
    write_json(summary, Path(out) / names["summary"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    for v in VARIANTS:
        parser.add_argument(f"--{v}-train", required=True, help=f"train-split activation set of the {v} model")
        parser.add_argument(f"--{v}-test", required=True, help=f"test-split activation set of the {v} model")
        parser.add_argument(f"--{v}-classifier", help=f"task classifier folder of the {v} model (labelled data)")
        cli.add_lm(parser, f"--{v}-lm", f"the {v} model")
    parser.add_argument("--tokens", help="tokens table of the test split (splice, latent examples)")
    parser.add_argument("--meta", help="the dataset's meta.json (label names, concepts)")
    parser.add_argument("--features-config", type=json.loads, help="the features section as JSON")
    cli.add_config(parser, "sae_eval config (documents for the spliced loss)", "--eval-config")
    cli.add_config(parser, "crosscoder recipe", "--recipe")
    parser.add_argument("--name", required=True, help="the recipe's name in the config")
    cli.add_config(parser, "crosscoder section (with the diff's retained_cosine)")
    parser.add_argument("--source", required=True, help="model source, recorded as metadata.model_name")
    parser.add_argument("--out", required=True)
    cli.add_load(parser)
    args = vars(cli.parse_model_job(parser, argv))
    run(
        {v: args[f"{v}_train"] for v in VARIANTS},
        {v: args[f"{v}_test"] for v in VARIANTS},
        *(args[k] for k in ("recipe", "name", "config", "source", "out", "tokens")),
        {what: {v: args[f"{v}_{what}"] for v in VARIANTS} for what in ("classifier", "lm")},
        args["eval_config"],
        args["meta"],
        args["features_config"],
    )
