"""Stage `probe`: is the task linearly readable at this layer, and in how few features?

Per (model, variant, dataset, site, layer). Every probe is fitted on the train
split and scored on the test split (the test labels are never seen in fitting;
regularisation is chosen by cross-validation inside the train split).
Representations: the raw activations (``raw``) and the latents of each SAE of
this variant at this layer (``sae:<recipe>``).

- **Sequence probes** (`sequence.parquet`): logistic regression on one vector
  per document, pooled as the mean over its tokens and as the token its
  classifier reads (``first`` = [CLS] for encoders, ``last`` for decoders; see
  `workflow.analysis.pooling`). Features are standardised with train statistics; the
  L2 strength C is chosen from ``Cs`` by stratified ``folds``-fold
  cross-validation (scikit-learn's `LogisticRegressionCV`). Held-out accuracy
  and macro-F1, with the train accuracy (a large gap is memorisation) and the
  majority-class share of the test split (chance).
- **k-sparse probes** (`sparse.parquet`, `ranked.parquet`): features ranked by
  class separation on the train split (ANOVA F statistic: for two classes the
  squared t statistic of the mean difference), then a probe on the top k for
  each k of ``ks``. `ranked.parquet` lists the top features with their F
  score, the class they are highest for and, for SAE latents, their top
  tokens and the `examples.parquet` holding their examples.
- **Token probes** (`tokens.parquet`), for datasets with planted concepts: is
  this token part of concept c? One balanced-class-weight probe per concept
  on a seeded sample of ordinary (non-special) tokens, C chosen by
  cross-validated average precision; scored on test tokens by AUROC, average
  precision, F1 and balanced accuracy. On raw activations, and on SAE latents
  when ``token_saes`` is set (the `features` stage already scores each single
  latent as a concept detector).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis import probes
from workflow.layout import Representation
from workflow.models.families import family
from workflow.runner import cli
from workflow.sae import load
from workflow.store.activations import ActivationSet
from workflow.store.files import atomic_dir, read_json, write_json
from workflow.store.tables import feature_top_tokens
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


def _load(acts: dict, tokens: dict, sae_dirs: dict, cfg: dict):
    """Activation sets and documents of both splits, the documents kept, and the SAEs."""
    sets = {split: ActivationSet(acts[split]) for split in ("train", "test")}
    docs = {split: read_documents(tokens[split]) for split in ("train", "test")}
    keep = {
        "train": probes.sample_docs(docs["train"].offsets, cfg["max_train_docs"], cfg["seed"]),
        "test": np.arange(len(docs["test"].labels)),
    }
    loaded = {name: load(folder) for name, folder in sae_dirs.items()}
    for name, sae in loaded.items():
        if sae.d_in != sets["train"].d_model:
            raise ValueError(
                f"{sae_dirs[name]}: d_in {sae.d_in} does not match the activations' d_model {sets['train'].d_model}"
            )
    return sets, docs, keep, loaded


def run(acts: dict, tokens: dict, meta_path: str, family_name: str, sae_dirs: dict, cfg: dict, out_dir: str) -> dict:
    """acts/tokens: {"train": ..., "test": ...}; sae_dirs: {recipe: SAE folder of this variant and layer}."""
    started = time.perf_counter()
    meta = read_json(meta_path)
    label_names, concepts = meta["label_names"], meta.get("concepts") or []
    position = family(family_name).pooled
    sets, docs, keep, loaded = _load(acts, tokens, sae_dirs, cfg)
    labels = {split: docs[split].labels[keep[split]].astype(np.int64) for split in sets}
    pooled = probes.pool_representations(sets, docs, loaded, position, cfg["batch_rows"])
    sequence, sparse, ranked = probes.sequence_probes(
        pooled, keep, labels, label_names, position, sae_dirs, cfg, out_dir
    )
    tokens_rows = []
    if concepts:
        tables = {split: pl.read_parquet(tokens[split], columns=["row", "is_special", "concepts"]) for split in sets}
        tokens_rows = probes.token_probes(tables, sets, concepts, loaded, cfg, out_dir)
    ranked_table = pl.DataFrame(ranked, schema=probes.RANKED_SCHEMA)
    manifest = sets["test"].manifest
    summary = {
        **{k: manifest.get(k) for k in ("model", "variant", "dataset", "site", "layer")},
        "activations": acts,
        "saes": sae_dirs,
        "family": family_name,
        "position": position,
        "label_names": label_names,
        "concepts": concepts,
        "n_train_docs": int(len(keep["train"])),
        "n_test_docs": int(len(keep["test"])),
        "best": {f"{r['representation']}/{r['pooling']}": r["accuracy"] for r in sequence},
        "seconds": time.perf_counter() - started,
    }
    top_tokens = {str(Representation.sae(name)): feature_top_tokens(folder) for name, folder in sae_dirs.items()}
    names = layout.PROBE.names
    with atomic_dir(out_dir) as tmp:
        pl.DataFrame(sequence).write_parquet(tmp / names["sequence"])
        pl.DataFrame(sparse).write_parquet(tmp / names["sparse"])
        probes.with_top_tokens(ranked_table, top_tokens).write_parquet(tmp / names["ranked"])
        probes.token_table(tokens_rows).write_parquet(tmp / names["tokens"])
        write_json(summary, tmp / names["summary"])
    counts = (len(sequence), len(sparse), len(tokens_rows))
    log.info("%s: %d sequence probes, %d k-sparse, %d token probes in %.1f s", out_dir, *counts, summary["seconds"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument(
        "--train-acts", required=True, help="activation set of the train split (this variant, site, layer)"
    )
    parser.add_argument("--test-acts", required=True, help="activation set of the test split")
    parser.add_argument("--train-tokens", required=True)
    parser.add_argument("--test-tokens", required=True)
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names, concepts)")
    parser.add_argument(
        "--family", required=True, help="model family (workflow.models.families): which token is pooled"
    )
    parser.add_argument(
        "--sae",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="an SAE of this variant and layer (repeatable)",
    )
    cli.add_config(parser, "probe config")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(
        {"train": args.train_acts, "test": args.test_acts},
        {"train": args.train_tokens, "test": args.test_tokens},
        args.meta,
        args.family,
        cli.pairs(args.sae),
        args.config,
        args.out_dir,
    )
