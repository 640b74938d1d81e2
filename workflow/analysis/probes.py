"""Linear probes: standardised, cross-validated logistic regression fitted on train and scored on test.

`fit_probe` is the one probe every other builds on (C chosen by stratified CV
inside the train split, constant columns dropped); `sparse_probes` ranks
features by class separation (ANOVA F) and fits a probe on the top k;
`token_probe` is a balanced probe for a rare token property, scored by AUROC
and average precision. Used by stage `probe`.
"""

from __future__ import annotations

import numpy as np
import polars as pl


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
