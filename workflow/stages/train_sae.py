"""Stage `train_sae`: one sparse autoencoder on one activation set (train split).

The training loop is `workflow.sae.training` (shuffled streaming batches,
normalised inputs, lr warmup and decay, dead latents and AuxK, resumable
checkpoints); the architecture and its typed recipe come from the registry
(`workflow.sae.ARCHITECTURES`). Output: the SAELens folder
(sae_weights.safetensors, cfg.json, with provenance under ``metadata``) and
training_log.parquet.
"""

from __future__ import annotations

import logging

from workflow.models.families import FAMILIES, model_family
from workflow.models.loading import autocast_dtype, describe_device, pick_device
from workflow.models.sources import read_model_config, resolve_source
from workflow.runner import cli
from workflow.runner.codehash import code_version
from workflow.sae import recipe_from_dict
from workflow.sae.training import train
from workflow.store.activations import ActivationSet

log = logging.getLogger(__name__)


def saelens_metadata(manifest: dict, source: str, family: str, max_length: int, sae_name: str) -> dict:
    """cfg.json `metadata`: provenance in SAELens' keys, plus ours (`study`: where the SAE belongs)."""
    layer = manifest["layer"]
    return {
        "model_name": source,
        "hook_name": manifest["hook_name"],
        "hook_layer": max(layer - 1, 0),  # SAEBench's custom-SAE loader reads it
        "context_size": max_length,
        "prepend_bos": FAMILIES[family].prepend_bos,  # [CLS] opens every BERT input
        "dataset_path": manifest.get("dataset"),
        "sae_lens_training_version": None,
        "study": {k: manifest.get(k) for k in ("model", "variant", "dataset", "split", "site", "layer")}
        | {"sae": sae_name},
    }


def run(acts: str, recipe: dict, name: str, source: str, max_length: int, out: str) -> dict:
    manifest = ActivationSet(acts).manifest
    family = model_family(read_model_config(resolve_source(source)))
    typed, device = recipe_from_dict(recipe), pick_device()
    log.info("device: %s", describe_device(device))
    metadata = saelens_metadata(manifest, source, family, max_length, name)
    amp, code = autocast_dtype(typed.dtype, device), code_version("train_sae", typed.architecture)
    return train(acts, typed, out, metadata, device, amp=amp, code=code)


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--acts", required=True, help="activation set folder (train split)")
    cli.add_config(parser, "SAE recipe", "--recipe")
    parser.add_argument("--name", required=True, help="the recipe's name in the config")
    parser.add_argument("--source", required=True, help="model source, recorded as metadata.model_name")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--out", required=True, help="SAE folder")
    args = parser.parse_args(argv)
    run(args.acts, args.recipe, args.name, args.source, args.max_length, args.out)
