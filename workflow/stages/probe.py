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
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.pooling import Pooled, pool_set
from workflow.analysis.probes import fit_probe, public, sparse_probes, token_probe, token_sample
from workflow.models.families import family
from workflow.runner import cli
from workflow.sae import load
from workflow.sae.codes import encode_rows
from workflow.store.activations import ActivationSet
from workflow.store.files import atomic_dir, read_json, write_json
from workflow.store.tables import feature_top_tokens
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)

RANKED_SCHEMA = {
    "representation": pl.Utf8,
    "pooling": pl.Utf8,
    "rank": pl.Int64,
    "feature": pl.Int64,
    "f_score": pl.Float64,
    "top_class": pl.Utf8,
    "examples": pl.Utf8,
}


def _sample_docs(offsets: np.ndarray, max_docs: int | None, seed: int) -> np.ndarray:
    n = len(offsets) - 1
    if max_docs is None or n <= max_docs:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_docs, replace=False))


def _load(acts: dict, tokens: dict, sae_dirs: dict, cfg: dict):
    """Activation sets and documents of both splits, the documents kept, and the SAEs."""
    sets = {split: ActivationSet(acts[split]) for split in ("train", "test")}
    docs = {split: read_documents(tokens[split]) for split in ("train", "test")}
    keep = {
        "train": _sample_docs(docs["train"].offsets, cfg["max_train_docs"], cfg["seed"]),
        "test": np.arange(len(docs["test"].labels)),
    }
    loaded = {name: load(folder) for name, folder in sae_dirs.items()}
    for name, sae in loaded.items():
        if sae.d_in != sets["train"].d_model:
            raise ValueError(
                f"{sae_dirs[name]}: d_in {sae.d_in} does not match the activations' d_model {sets['train'].d_model}"
            )
    return sets, docs, keep, loaded


def _pool(sets: dict, docs: dict, loaded: dict, position: str, batch_rows: int) -> dict[str, dict[str, Pooled]]:
    """{representation: {split: pooled documents}}: raw activations, then each SAE's latents."""
    pooled: dict[str, dict[str, Pooled]] = {"raw": {}}
    for split, aset in sets.items():
        pooled["raw"][split] = pool_set(aset, docs[split].offsets, position, None, batch_rows)
        for name, sae in loaded.items():
            pooled.setdefault(f"sae:{name}", {})[split] = pool_set(aset, docs[split].offsets, position, sae, batch_rows)
    return pooled


def _ranked(
    rep: str, pooling: str, x: dict, y: np.ndarray, order, scores, label_names: list, sae_dirs: dict, depth: int
) -> list[dict]:
    """The top `depth` features of a k-sparse ranking, with the class each is highest for."""
    top = order[:depth]
    class_means = np.stack(
        [
            x["train"][y == c][:, top].mean(0) if (y == c).any() else np.full(len(top), np.nan)
            for c in range(len(label_names))
        ]
    )
    name = rep.partition(":")[2]
    examples = str(Path(sae_dirs[name]) / layout.SAE.names["examples"]) if name else None
    return [
        {
            "representation": rep,
            "pooling": pooling,
            "rank": rank,
            "feature": int(feature),
            "f_score": float(scores[feature]),
            "top_class": label_names[int(np.nanargmax(class_means[:, rank]))],
            "examples": examples,
        }
        for rank, feature in enumerate(top)
    ]


def sequence_probes(
    pooled: dict, keep: dict, labels: dict, label_names: list, position: str, sae_dirs: dict, cfg: dict, where: str
) -> tuple[list, list, list]:
    """Sequence probes of every representation and pooling; k-sparse probes and their rankings on one pooling."""
    sequence, sparse, ranked = [], [], []
    sparse_pooling = position if cfg["sparse_pooling"] == "position" else "mean"
    for rep, by_split in pooled.items():
        for pooling in ("mean", position):
            x = {split: by_split[split].get(pooling)[keep[split]] for split in keep}
            here = f"{where} {rep} {pooling}"
            result = public(fit_probe(x["train"], labels["train"], x["test"], labels["test"], cfg, where=here))
            sequence.append({"representation": rep, "pooling": pooling, **result})
            log.info(
                "%-12s %-5s probe: test accuracy %.3f macro-F1 %.3f (train %.3f, C %.3g, chance %.3f)",
                rep,
                pooling,
                result["accuracy"],
                result["macro_f1"],
                result["train_accuracy"],
                result["C"],
                result["chance"],
            )
            if pooling != sparse_pooling:
                continue
            rows, order, scores = sparse_probes(
                x["train"], labels["train"], x["test"], labels["test"], cfg["ks"], cfg, here
            )
            sparse += [{"representation": rep, "pooling": pooling, **row} for row in rows]
            log.info("%-12s k-sparse: %s", rep, ", ".join(f"k={r['k']} {r['accuracy']:.3f}" for r in rows))
            ranked += _ranked(rep, pooling, x, labels["train"], order, scores, label_names, sae_dirs, max(cfg["ks"]))
    return sequence, sparse, ranked


def run(
    acts: dict[str, str],
    tokens: dict[str, str],
    meta_path: str,
    family_name: str,
    sae_dirs: dict[str, str],
    cfg: dict,
    out_dir: str,
) -> dict:
    """acts/tokens: {"train": ..., "test": ...}; sae_dirs: {recipe: SAE folder of this variant and layer}."""
    started = time.perf_counter()
    meta = read_json(meta_path)
    label_names, concepts = meta["label_names"], meta.get("concepts") or []
    position = family(family_name).pooled
    sets, docs, keep, loaded = _load(acts, tokens, sae_dirs, cfg)
    labels = {split: docs[split].labels[keep[split]].astype(np.int64) for split in sets}
    pooled = _pool(sets, docs, loaded, position, cfg["batch_rows"])
    sequence, sparse, ranked = sequence_probes(pooled, keep, labels, label_names, position, sae_dirs, cfg, out_dir)
    tokens_rows = _token_probes(sets, tokens, concepts, loaded, cfg, out_dir) if concepts else []
    ranked_table = pl.DataFrame(ranked, schema=RANKED_SCHEMA)
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
    names = layout.PROBE.names
    with atomic_dir(out_dir) as tmp:
        pl.DataFrame(sequence).write_parquet(tmp / names["sequence"])
        pl.DataFrame(sparse).write_parquet(tmp / names["sparse"])
        _with_top_tokens(ranked_table, sae_dirs).write_parquet(tmp / names["ranked"])
        _token_table(tokens_rows).write_parquet(tmp / names["tokens"])
        write_json(summary, tmp / names["summary"])
    counts = (len(sequence), len(sparse), len(tokens_rows))
    log.info("%s: %d sequence probes, %d k-sparse, %d token probes in %.1f s", out_dir, *counts, summary["seconds"])
    return summary


def _token_probes(sets, tokens: dict, concepts: list[str], loaded: dict, cfg: dict, where: str) -> list[dict]:
    tables = {split: pl.read_parquet(tokens[split], columns=["row", "is_special", "concepts"]) for split in sets}
    rows = {split: token_sample(tables[split], cfg["token_max_tokens"], cfg["seed"]) for split in sets}
    member = {
        split: {c: tables[split]["concepts"].list.contains(c).to_numpy()[rows[split]] for c in concepts}
        for split in sets
    }
    raw = {split: sets[split].rows(rows[split]) for split in sets}
    reps = {"raw": raw}
    if cfg["token_saes"]:
        for name, sae in loaded.items():
            reps[f"sae:{name}"] = {split: encode_rows(sae, raw[split], cfg["batch_rows"], "cpu") for split in sets}
    out = []
    for concept in concepts:
        y_train, y_test = member["train"][concept], member["test"][concept]
        if y_train.sum() < 2 or (~y_train).sum() < 2 or y_test.sum() == 0:
            log.info(
                "concept %s: %d train / %d test tokens in the sample; no probe", concept, y_train.sum(), y_test.sum()
            )
            continue
        for rep, x in reps.items():
            result = token_probe(x["train"], y_train, x["test"], y_test, cfg, f"{where} {rep} concept {concept}")
            out.append({"representation": rep, "concept": concept, **result})
            log.info(
                "%-12s concept %-20s AUROC %.3f AP %.3f F1 %.3f",
                rep,
                concept,
                result["auroc"],
                result["average_precision"],
                result["f1"],
            )
    return out


def _token_table(rows: list[dict]) -> pl.DataFrame:
    if rows:
        return pl.DataFrame(rows)
    return pl.DataFrame(
        schema={
            "representation": pl.Utf8,
            "concept": pl.Utf8,
            "auroc": pl.Float64,
            "average_precision": pl.Float64,
            "f1": pl.Float64,
            "balanced_accuracy": pl.Float64,
        }
    )


def _with_top_tokens(ranked: pl.DataFrame, sae_dirs: dict[str, str]) -> pl.DataFrame:
    """Join each SAE latent's top tokens (from its `features` table, where it exists)."""
    parts = []
    for rep, group in ranked.group_by("representation", maintain_order=True):
        rep = rep[0]
        name = rep.partition(":")[2]
        table = feature_top_tokens(sae_dirs.get(name)) if name else None
        if table is None:
            parts.append(group.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("top_tokens")))
        else:
            parts.append(group.join(table.select("feature", "top_tokens"), on="feature", how="left"))
    if not parts:
        return ranked.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("top_tokens"))
    return pl.concat(parts, how="vertical_relaxed").sort("representation", "rank", maintain_order=True)


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
