"""Linear probes: standardised, cross-validated logistic regression fitted on train and scored on test.

`fit_probe` is the one probe every other builds on (C chosen by stratified CV
inside the train split, constant columns dropped); `sparse_probes` ranks
features by class separation (ANOVA F) and fits a probe on the top k;
`token_probe` is a balanced probe for a rare token property, scored by AUROC
and average precision. `sequence_probes` and `token_probes` run them over every
representation (``raw``, ``sae:<recipe>``: `workflow.layout.Representation`) for
stage `probe`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.pooling import Pooled, pool_set
from workflow.layout import Representation

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
TOKEN_SCHEMA = {  # the token probes' table where no concept has a probe
    "representation": pl.Utf8,
    "concept": pl.Utf8,
    "auroc": pl.Float64,
    "average_precision": pl.Float64,
    "f1": pl.Float64,
    "balanced_accuracy": pl.Float64,
}


def _folds(y: np.ndarray, folds: int, where: str) -> int:
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if len(counts[counts > 0]) < 2:
        raise ValueError(f"{where}: the train split has a single class; a probe needs two")
    if smallest < 2:
        raise ValueError(f"{where}: a class has {smallest} train example(s); cross-validation needs at least 2")
    return min(folds, smallest)


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    cfg: dict,
    scoring: str = "accuracy",
    class_weight=None,
    where: str = "probe",
) -> dict:
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
    model = LogisticRegressionCV(
        Cs=list(cfg["Cs"]),
        cv=folds,
        l1_ratios=(0.0,),
        scoring=scoring,
        class_weight=class_weight,
        max_iter=cfg["max_iter"],
        tol=cfg["tol"],
        random_state=cfg["seed"],
        use_legacy_attributes=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(scaler.transform(x_train), y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    train_pred = model.predict(scaler.transform(x_train))
    z_test = scaler.transform(x_test)
    pred = model.predict(z_test)
    out = {
        "n_features": n_features,
        "n_used": int(varies.sum()),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "C": float(model.C_),
        "converged": converged,
        "train_accuracy": float(accuracy_score(y_train, train_pred)),
        "accuracy": float(accuracy_score(y_test, pred)),
        "macro_f1": float(f1_score(y_test, pred, average="macro", zero_division=0)),
        "chance": float(np.bincount(y_test).max() / len(y_test)) if len(y_test) else float("nan"),
    }
    out["_model"], out["_scaler"], out["_z_test"] = model, scaler, z_test
    return out


def public(result: dict) -> dict:
    return {k: v for k, v in result.items() if not k.startswith("_")}


def separation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class separation of each feature: the ANOVA F statistic (0 for constant features)."""
    import warnings

    from sklearn.feature_selection import f_classif

    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Features ... are constant": they score 0 below
        f, _ = f_classif(x, y)
    return np.nan_to_num(np.asarray(f, dtype=np.float64), nan=0.0, posinf=np.finfo(np.float64).max)


def sparse_probes(
    x_train, y_train, x_test, y_test, ks, cfg: dict, where: str = "probe"
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Probes on the top-k features by train-split separation, for each k of ks (capped at the width).

    Returns (one row per k, the ranking, the F scores)."""
    scores = separation(x_train, y_train)
    order = np.argsort(-scores, kind="stable")
    rows = []
    for k in sorted({min(int(k), x_train.shape[1]) for k in ks}):
        chosen = order[:k]
        result = public(fit_probe(x_train[:, chosen], y_train, x_test[:, chosen], y_test, cfg, where=f"{where} k={k}"))
        rows.append({"k": k, **result, "features": chosen.astype(np.int64).tolist()})
    return rows, order, scores


def token_probe(x_train, y_train, x_test, y_test, cfg: dict, where: str) -> dict:
    """Binary probe for a rare token property: balanced class weights, C by average precision."""
    from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, roc_auc_score

    result = fit_probe(
        x_train, y_train, x_test, y_test, cfg, scoring="average_precision", class_weight="balanced", where=where
    )
    model, z_test = result["_model"], result["_z_test"]
    score = model.decision_function(z_test)
    pred = model.predict(z_test)
    both = len(np.unique(y_test)) == 2
    return {
        **{k: result[k] for k in ("n_features", "n_used", "n_train", "n_test", "C", "converged", "train_accuracy")},
        "n_positive_train": int(np.sum(y_train)),
        "n_positive_test": int(np.sum(y_test)),
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


def sample_docs(offsets: np.ndarray, max_docs: int | None, seed: int) -> np.ndarray:
    """Positions of a seeded sample of at most max_docs documents, in order (all where None)."""
    n = len(offsets) - 1
    if max_docs is None or n <= max_docs:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_docs, replace=False))


def pool_representations(sets: dict, docs: dict, loaded: dict, position: str, batch_rows: int) -> dict:
    """{representation: {split: Pooled documents}}: raw activations, then each SAE's latents.
    sets/docs: per split, its ActivationSet and its `Documents`; loaded: {recipe: SAE}."""
    pooled: dict[str, dict[str, Pooled]] = {Representation.RAW: {}}
    for split, aset in sets.items():
        pooled[Representation.RAW][split] = pool_set(aset, docs[split].offsets, position, None, batch_rows)
        for name, sae in loaded.items():
            rep = str(Representation.sae(name))
            pooled.setdefault(rep, {})[split] = pool_set(aset, docs[split].offsets, position, sae, batch_rows)
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
    name = Representation.parse(rep).name
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
    """Sequence probes of every representation and pooling; k-sparse probes and their rankings on one pooling.
    pooled: `pool_representations`; keep/labels: per split, the documents kept and their labels."""
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


def token_probes(tables: dict, sets: dict, concepts: list[str], loaded: dict, cfg: dict, where: str) -> list[dict]:
    """Per planted concept with enough sampled tokens, a `token_probe` on each representation.
    tables: per split its tokens table (row, is_special, concepts); sets: per split its ActivationSet."""
    from workflow.sae.codes import encode_rows

    rows = {split: token_sample(tables[split], cfg["token_max_tokens"], cfg["seed"]) for split in sets}
    member = {
        split: {c: tables[split]["concepts"].list.contains(c).to_numpy()[rows[split]] for c in concepts}
        for split in sets
    }
    raw = {split: sets[split].rows(rows[split]) for split in sets}
    reps = {Representation.RAW: raw}
    if cfg["token_saes"]:
        for name, sae in loaded.items():
            reps[str(Representation.sae(name))] = {
                split: encode_rows(sae, raw[split], cfg["batch_rows"], "cpu") for split in sets
            }
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


def token_table(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema=TOKEN_SCHEMA)


def with_top_tokens(ranked: pl.DataFrame, top_tokens: dict) -> pl.DataFrame:
    """Join each SAE latent's top tokens. top_tokens: representation -> its (feature, top_tokens)
    table (`workflow.store.tables.feature_top_tokens`), None or absent where there is none."""
    parts = []
    for rep, group in ranked.group_by("representation", maintain_order=True):
        table = top_tokens.get(rep[0])
        if table is None:
            parts.append(group.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("top_tokens")))
        else:
            parts.append(group.join(table.select("feature", "top_tokens"), on="feature", how="left"))
    if not parts:
        return ranked.with_columns(pl.lit(None, dtype=pl.List(pl.Utf8)).alias("top_tokens"))
    return pl.concat(parts, how="vertical_relaxed").sort("representation", "rank", maintain_order=True)
