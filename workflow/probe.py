"""Stage `probe`: is the task linearly readable at this layer, and in how few features?

Per (model, variant, dataset, site, layer). Every probe is fitted on the train
split and scored on the test split (the test labels are never seen in fitting;
regularisation is chosen by cross-validation inside the train split).
Representations: the raw activations (``raw``) and the latents of each SAE of
this variant at this layer (``sae:<recipe>``).

- **Sequence probes** (`sequence.parquet`): logistic regression on one vector
  per document, pooled as the mean over its tokens and as the token its
  classifier reads (``first`` = [CLS] for BERT, ``last`` for GPT-2; see
  `workflow.pooling`). Features are standardised with train statistics; the
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

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import io, sae as saes
from workflow.pooling import POSITION, Pooled, pool_set
from workflow.tokenize import read_documents

log = logging.getLogger(__name__)


def _folds(y: np.ndarray, folds: int, where: str) -> int:
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if len(counts[counts > 0]) < 2:
        raise ValueError(f"{where}: the train split has a single class; a probe needs two")
    if smallest < 2:
        raise ValueError(f"{where}: a class has {smallest} train example(s); cross-validation needs at least 2")
    return min(folds, smallest)


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, cfg: dict,
              scoring: str = "accuracy", class_weight=None, where: str = "probe") -> dict:
    """Fit a standardised, cross-validated L2 logistic regression on train; score it on test."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    y_train, y_test = np.asarray(y_train, dtype=np.int64), np.asarray(y_test, dtype=np.int64)
    n_features = int(x_train.shape[1])
    varies = np.ptp(x_train, axis=0) > 0  # constant columns (e.g. latents silent on train) carry nothing
    if not varies.any():
        varies[0] = True  # keep one column: the probe then predicts from the intercept alone
    x_train, x_test = x_train[:, varies], x_test[:, varies]
    scaler = StandardScaler().fit(x_train)
    folds = StratifiedKFold(_folds(y_train, cfg["folds"], where), shuffle=True, random_state=cfg["seed"])
    model = LogisticRegressionCV(Cs=list(cfg["Cs"]), cv=folds, l1_ratios=(0.0,), scoring=scoring,
                                 class_weight=class_weight, max_iter=cfg["max_iter"], tol=cfg["tol"],
                                 random_state=cfg["seed"], use_legacy_attributes=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(scaler.transform(x_train), y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    train_pred = model.predict(scaler.transform(x_train))
    z_test = scaler.transform(x_test)
    pred = model.predict(z_test)
    out = {
        "n_features": n_features, "n_used": int(varies.sum()), "n_train": len(y_train), "n_test": len(y_test),
        "C": float(model.C_), "converged": converged,
        "train_accuracy": float(accuracy_score(y_train, train_pred)),
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
        "chance": float(np.bincount(y_test).max() / len(y_test)) if len(y_test) else float("nan"),
    }
    out["_model"], out["_scaler"], out["_z_test"] = model, scaler, z_test
    return out


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def separation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class separation of each feature: the ANOVA F statistic (0 for constant features)."""
    import warnings

    from sklearn.feature_selection import f_classif

    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Features ... are constant": they score 0 below
        f, _ = f_classif(x, y)
    return np.nan_to_num(np.asarray(f, dtype=np.float64), nan=0.0, posinf=np.finfo(np.float64).max)


def sparse_probes(x_train, y_train, x_test, y_test, ks, cfg: dict, where: str = "probe") -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Probes on the top-k features by train-split separation, for each k of ks (capped at the width).

    Returns (one row per k, the ranking, the F scores)."""
    scores = separation(x_train, y_train)
    order = np.argsort(-scores, kind="stable")
    rows = []
    for k in sorted({min(int(k), x_train.shape[1]) for k in ks}):
        chosen = order[:k]
        result = _public(fit_probe(x_train[:, chosen], y_train, x_test[:, chosen], y_test, cfg, where=f"{where} k={k}"))
        rows.append({"k": k, **result, "features": chosen.astype(np.int64).tolist()})
    return rows, order, scores


def token_probe(x_train, y_train, x_test, y_test, cfg: dict, where: str) -> dict:
    """Binary probe for a rare token property: balanced class weights, C by average precision."""
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

    result = fit_probe(x_train, y_train, x_test, y_test, cfg, scoring="average_precision", class_weight="balanced",
                       where=where)
    model, z_test = result["_model"], result["_z_test"]
    score = model.decision_function(z_test)
    pred = model.predict(z_test)
    both = len(np.unique(y_test)) == 2
    return {
        **{k: result[k] for k in ("n_features", "n_used", "n_train", "n_test", "C", "converged", "train_accuracy")},
        "n_positive_train": int(np.sum(y_train)), "n_positive_test": int(np.sum(y_test)),
        "auroc": float(roc_auc_score(y_test, score)) if both else float("nan"),
        "average_precision": float(average_precision_score(y_test, score)) if both else float("nan"),
        "f1": float(f1_score(y_test, pred, zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)) if both else float("nan"),
    }


def token_sample(tokens: pl.DataFrame, max_tokens: int | None, seed: int) -> np.ndarray:
    """Rows of ordinary (non-special) tokens: a seeded sample of at most max_tokens, in row order."""
    rows = tokens.filter(~pl.col("is_special"))["row"].to_numpy()
    if max_tokens is not None and len(rows) > max_tokens:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_tokens, replace=False))
    return rows


def _encode_rows(sae, x: np.ndarray, batch_rows: int, device) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_rows):
            out.append(sae.encode(torch.from_numpy(x[start : start + batch_rows]).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, sae.d_sae), dtype=np.float32)


def _sample_docs(offsets: np.ndarray, max_docs: int | None, seed: int) -> np.ndarray:
    n = len(offsets) - 1
    if max_docs is None or n <= max_docs:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_docs, replace=False))


def _feature_info(features_dir: str | None) -> pl.DataFrame | None:
    """Top tokens of each SAE latent from the `features` stage, if its table exists."""
    if not features_dir or not (Path(features_dir) / "features.parquet").exists():
        return None
    return pl.read_parquet(Path(features_dir) / "features.parquet", columns=["feature", "top_tokens"])


def run(acts: dict[str, str], tokens: dict[str, str], meta_path: str, family: str, sae_dirs: dict[str, str],
        cfg: dict, out_dir: str) -> dict:
    """acts/tokens: {"train": ..., "test": ...}; sae_dirs: {recipe: SAE folder of this variant and layer}."""
    started = time.perf_counter()
    meta = io.read_json(meta_path)
    label_names, concepts = meta["label_names"], meta.get("concepts") or []
    position = POSITION.get(family)
    if position is None:
        raise ValueError(f"model family {family!r}: no pooled position known (known: {', '.join(POSITION)})")
    sets = {split: io.ActivationSet(acts[split]) for split in ("train", "test")}
    docs = {split: read_documents(tokens[split]) for split in ("train", "test")}
    keep = {"train": _sample_docs(docs["train"].offsets, cfg["max_train_docs"], cfg["seed"]),
            "test": np.arange(len(docs["test"].labels))}
    labels = {split: docs[split].labels[keep[split]].astype(np.int64) for split in sets}
    loaded = {name: saes.load(folder) for name, folder in sae_dirs.items()}
    for name, sae in loaded.items():
        if sae.d_in != sets["train"].d_model:
            raise ValueError(f"{sae_dirs[name]}: d_in {sae.d_in} does not match the activations' d_model {sets['train'].d_model}")

    pooled: dict[str, dict[str, Pooled]] = {"raw": {}}
    for split, aset in sets.items():
        pooled["raw"][split] = pool_set(aset, docs[split].offsets, position, None, cfg["batch_rows"])
        for name, sae in loaded.items():
            pooled.setdefault(f"sae:{name}", {})[split] = pool_set(aset, docs[split].offsets, position, sae, cfg["batch_rows"])

    sequence, sparse, ranked = [], [], []
    for rep, by_split in pooled.items():
        for pooling in ("mean", position):
            x = {split: by_split[split].get(pooling)[keep[split]] for split in sets}
            where = f"{out_dir} {rep} {pooling}"
            result = _public(fit_probe(x["train"], labels["train"], x["test"], labels["test"], cfg, where=where))
            sequence.append({"representation": rep, "pooling": pooling, **result})
            log.info("%-12s %-5s probe: test accuracy %.3f macro-F1 %.3f (train %.3f, C %.3g, chance %.3f)", rep,
                     pooling, result["accuracy"], result["macro_f1"], result["train_accuracy"], result["C"], result["chance"])
            if pooling != (position if cfg["sparse_pooling"] == "position" else "mean"):
                continue
            rows, order, scores = sparse_probes(x["train"], labels["train"], x["test"], labels["test"], cfg["ks"], cfg, where)
            sparse += [{"representation": rep, "pooling": pooling, **row} for row in rows]
            log.info("%-12s k-sparse: %s", rep, ", ".join(f"k={r['k']} {r['accuracy']:.3f}" for r in rows))
            top = order[: max(cfg["ks"])]
            class_means = np.stack([x["train"][labels["train"] == c][:, top].mean(0) if (labels["train"] == c).any()
                                    else np.full(len(top), np.nan) for c in range(len(label_names))])
            name = rep.partition(":")[2]
            for rank, feature in enumerate(top):
                ranked.append({"representation": rep, "pooling": pooling, "rank": rank, "feature": int(feature),
                               "f_score": float(scores[feature]),
                               "top_class": label_names[int(np.nanargmax(class_means[:, rank]))],
                               "examples": str(Path(sae_dirs[name]) / "examples.parquet") if name else None})

    tokens_rows = _token_probes(sets, tokens, concepts, loaded, cfg, out_dir) if concepts else []

    ranked_table = pl.DataFrame(ranked, schema={"representation": pl.Utf8, "pooling": pl.Utf8, "rank": pl.Int64,
                                                "feature": pl.Int64, "f_score": pl.Float64, "top_class": pl.Utf8,
                                                "examples": pl.Utf8})
    ranked_table = _with_top_tokens(ranked_table, sae_dirs)
    summary = {
        "activations": acts, "saes": sae_dirs, "family": family, "position": position,
        "label_names": label_names, "concepts": concepts,
        "n_train_docs": int(len(keep["train"])), "n_test_docs": int(len(keep["test"])),
        "best": {f"{r['representation']}/{r['pooling']}": r["accuracy"] for r in sequence},
        "seconds": time.perf_counter() - started,
    }
    with io.atomic_dir(out_dir) as tmp:
        pl.DataFrame(sequence).write_parquet(tmp / "sequence.parquet")
        pl.DataFrame(sparse).write_parquet(tmp / "sparse.parquet")
        ranked_table.write_parquet(tmp / "ranked.parquet")
        _token_table(tokens_rows).write_parquet(tmp / "tokens.parquet")
        io.write_json(summary, tmp / "probe.json")
    log.info("%s: %d sequence probes, %d k-sparse, %d token probes in %.1f s", out_dir, len(sequence), len(sparse),
             len(tokens_rows), summary["seconds"])
    return summary


def _token_probes(sets, tokens: dict, concepts: list[str], loaded: dict, cfg: dict, where: str) -> list[dict]:
    tables = {split: pl.read_parquet(tokens[split], columns=["row", "is_special", "concepts"]) for split in sets}
    rows = {split: token_sample(tables[split], cfg["token_max_tokens"], cfg["seed"]) for split in sets}
    member = {split: {c: tables[split]["concepts"].list.contains(c).to_numpy()[rows[split]] for c in concepts}
              for split in sets}
    raw = {split: sets[split].rows(rows[split]) for split in sets}
    reps = {"raw": raw}
    if cfg["token_saes"]:
        for name, sae in loaded.items():
            reps[f"sae:{name}"] = {split: _encode_rows(sae, raw[split], cfg["batch_rows"], "cpu") for split in sets}
    out = []
    for concept in concepts:
        y_train, y_test = member["train"][concept], member["test"][concept]
        if y_train.sum() < 2 or (~y_train).sum() < 2 or y_test.sum() == 0:
            log.info("concept %s: %d train / %d test tokens in the sample; no probe", concept, y_train.sum(), y_test.sum())
            continue
        for rep, x in reps.items():
            result = token_probe(x["train"], y_train, x["test"], y_test, cfg, f"{where} {rep} concept {concept}")
            out.append({"representation": rep, "concept": concept, **result})
            log.info("%-12s concept %-20s AUROC %.3f AP %.3f F1 %.3f", rep, concept, result["auroc"],
                     result["average_precision"], result["f1"])
    return out


def _token_table(rows: list[dict]) -> pl.DataFrame:
    if rows:
        return pl.DataFrame(rows)
    return pl.DataFrame(schema={"representation": pl.Utf8, "concept": pl.Utf8, "auroc": pl.Float64,
                                "average_precision": pl.Float64, "f1": pl.Float64, "balanced_accuracy": pl.Float64})


def _with_top_tokens(ranked: pl.DataFrame, sae_dirs: dict[str, str]) -> pl.DataFrame:
    """Join each SAE latent's top tokens (from its `features` table, where it exists)."""
    parts = []
    for rep, group in ranked.group_by("representation", maintain_order=True):
        rep = rep[0]
        name = rep.partition(":")[2]
        table = _feature_info(sae_dirs.get(name)) if name else None
        if table is None:
            parts.append(group.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("top_tokens")))
        else:
            parts.append(group.join(table.select("feature", "top_tokens"), on="feature", how="left"))
    if not parts:
        return ranked.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("top_tokens"))
    return pl.concat(parts, how="vertical_relaxed").sort("representation", "rank", maintain_order=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow probe", description=__doc__.splitlines()[0])
    parser.add_argument("--train-acts", required=True, help="activation set of the train split (this variant, site, layer)")
    parser.add_argument("--test-acts", required=True, help="activation set of the test split")
    parser.add_argument("--train-tokens", required=True)
    parser.add_argument("--test-tokens", required=True)
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names, concepts)")
    parser.add_argument("--family", required=True, help="model family: bert or gpt2 (which token is pooled)")
    parser.add_argument("--sae", action="append", default=[], metavar="NAME=FOLDER",
                        help="an SAE of this variant and layer (repeatable)")
    parser.add_argument("--config", required=True, help="the probe config as JSON")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    sae_dirs = dict(item.split("=", 1) for item in args.sae)
    run({"train": args.train_acts, "test": args.test_acts}, {"train": args.train_tokens, "test": args.test_tokens},
        args.meta, args.family, sae_dirs, json.loads(args.config), args.out_dir)
