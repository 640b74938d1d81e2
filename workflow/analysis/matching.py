"""Matching two SAEs' features, and the categories of what fine-tuning did to them.

The matching maths of `workflow.analysis.diffing` (its docstring defines every term): decoder cosines,
one-to-one matching by maximum total cosine, each feature's best cosine, the
firing frequencies and activation correlations of matched pairs on the same
token rows, the categories, and the tables built from them. Outlier-norm
tokens are left out where a limit is given (`outlier_limit`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.layout import VARIANTS
from workflow.sae.codes import encode_batches
from workflow.store.activations import ActivationSet

PRE_CATEGORIES = ("retained", "drifted", "overwritten", "dead")
FT_CATEGORIES = ("retained", "drifted", "new", "dead")
# the matching's categories in the terms every diffing method shares (`workflow.analysis.agreement`)
MATCH_LABELS = {"retained": "kept", "drifted": "changed", "overwritten": "removed"}


def floor_excess(diff: dict, floor: dict, n_diff: int, n_floor: int, z: float = 1.96) -> dict:
    """Each category's share in the diff minus its share between two seeds (the noise floor), with
    a Wald 95% interval for a difference of two proportions (features counted as independent).
    `exceeds_floor`: the change is beyond seed noise (retained: fewer than between seeds; drifted,
    overwritten: more)."""
    import math

    out = {}
    for c in PRE_CATEGORIES:
        p1, p2 = diff.get(c, 0.0), floor.get(c, 0.0)
        half = z * math.sqrt(p1 * (1 - p1) / max(n_diff, 1) + p2 * (1 - p2) / max(n_floor, 1))
        d = p1 - p2
        exceeds = (d + half < 0) if c == "retained" else (d - half > 0) if c in ("drifted", "overwritten") else None
        out[c] = {"diff": p1, "floor": p2, "excess": d, "low": d - half, "high": d + half, "exceeds_floor": exceeds}
    return out


def decoder_cosines(W_dec_pre: np.ndarray, W_dec_ft: np.ndarray) -> np.ndarray:
    """(d_sae_pre, d_sae_ft) cosines of the decoder rows (float32: 2.4 GB at 24,576 latents each)."""
    a = W_dec_pre / np.maximum(np.linalg.norm(W_dec_pre, axis=1, keepdims=True), 1e-12)
    b = W_dec_ft / np.maximum(np.linalg.norm(W_dec_ft, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


def match_features(sim: np.ndarray, live_pre: np.ndarray | None = None, live_ft: np.ndarray | None = None):
    """One-to-one pairing of the live features of both sides by maximum total decoder cosine.
    partner[i]: the fine-tuned feature paired with pretrained feature i (-1: none, e.g. dead);
    cos[i]: their cosine. Dead features take no part, so they cannot take a live feature's partner."""
    from scipy.optimize import linear_sum_assignment

    live_pre = np.ones(sim.shape[0], bool) if live_pre is None else live_pre
    live_ft = np.ones(sim.shape[1], bool) if live_ft is None else live_ft
    rows_live, cols_live = np.flatnonzero(live_pre), np.flatnonzero(live_ft)
    rows, cols = linear_sum_assignment(sim[np.ix_(rows_live, cols_live)], maximize=True)
    rows, cols = rows_live[rows], cols_live[cols]
    partner = np.full(sim.shape[0], -1, dtype=np.int64)
    partner[rows] = cols
    cos = np.full(sim.shape[0], np.nan)
    cos[rows] = sim[rows, cols]
    return partner, cos


def best_cosines(sim: np.ndarray, live_pre: np.ndarray, live_ft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the largest decoder cosine with any live feature of the other side (not one-to-one:
    a feature split in two after fine-tuning has a high best cosine but only one partner)."""
    best_pre = sim[:, live_ft].max(1) if live_ft.any() else np.full(sim.shape[0], np.nan)
    best_ft = sim[live_pre].max(0) if live_pre.any() else np.full(sim.shape[1], np.nan)
    return best_pre.astype(np.float64), best_ft.astype(np.float64)


def firing_frequency(
    sae, aset: ActivationSet, max_norm: float, max_tokens: int | None, batch_rows: int, device
) -> np.ndarray:
    """Share of the (non-outlier) tokens on which each feature fires."""
    fires, n = np.zeros(sae.d_sae), 0
    for _, x, acts in encode_batches(sae, aset, max_tokens, batch_rows, device):
        keep = x.norm(dim=1) <= max_norm
        fires += (acts[keep] > 0).sum(0).cpu().numpy()
        n += int(keep.sum())
    return fires / max(n, 1)


def paired_activations(
    sae_pre,
    sae_ft,
    set_pre: ActivationSet,
    set_ft: ActivationSet,
    partner: np.ndarray,
    max_tokens: int | None,
    batch_rows: int,
    max_norm: dict | None = None,
    device="cpu",
) -> dict:
    """Firing frequencies of both SAEs on their own activations and the correlation of each matched pair,
    over the token rows that are outliers in neither set (norm above max_norm[variant])."""
    import torch

    limit = {v: float("inf") for v in VARIANTS} if max_norm is None else max_norm
    d_pre, d_ft = sae_pre.d_sae, sae_ft.d_sae
    sums = {k: np.zeros(d_pre) for k in ("a", "aa", "b", "bb", "ab")}
    fires_pre, fires_ft, n = np.zeros(d_pre), np.zeros(d_ft), 0
    paired = partner >= 0
    cols = torch.from_numpy(np.where(paired, partner, 0)).to(device)
    for (start_pre, x_pre, a), (start_ft, x_ft, b_all) in zip(
        encode_batches(sae_pre, set_pre, max_tokens, batch_rows, device),
        encode_batches(sae_ft, set_ft, max_tokens, batch_rows, device),
    ):
        if start_pre != start_ft or len(x_pre) != len(x_ft):
            raise ValueError(
                f"{set_pre.folder} and {set_ft.folder} are not row-aligned (batch at rows {start_pre} / {start_ft})"
            )
        keep = (x_pre.norm(dim=1) <= limit["pretrained"]) & (x_ft.norm(dim=1) <= limit["finetuned"])
        a, b_all = a[keep], b_all[keep]
        b = b_all[:, cols]  # (B, d_pre): the partner of each pretrained feature
        for key, value in (("a", a), ("aa", a * a), ("b", b), ("bb", b * b), ("ab", a * b)):
            sums[key] += value.sum(0, dtype=torch.float64).cpu().numpy()
        fires_pre += (a > 0).sum(0).cpu().numpy()
        fires_ft += (b_all > 0).sum(0).cpu().numpy()
        n += len(a)
    cov = n * sums["ab"] - sums["a"] * sums["b"]
    var = (n * sums["aa"] - sums["a"] ** 2) * (n * sums["bb"] - sums["b"] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(var > 0, cov / np.sqrt(np.maximum(var, 1e-300)), np.nan)
    corr[~paired] = np.nan
    means = {"mean_pre": sums["a"] / max(n, 1), "mean_ft": sums["b"] / max(n, 1)}  # mean activation, partner's
    return {"n_tokens": n, "freq_pre": fires_pre / max(n, 1), "freq_ft": fires_ft / max(n, 1), "corr": corr, **means}


def categorize(
    partner: np.ndarray, cos: np.ndarray, corr: np.ndarray, freq_pre: np.ndarray, freq_ft: np.ndarray, thresholds: dict
) -> tuple[np.ndarray, np.ndarray]:
    """Category of each pretrained and each fine-tuned feature (see the module docstring)."""
    paired = partner >= 0
    partner_fires = np.zeros(len(partner), dtype=bool)
    partner_fires[paired] = freq_ft[partner[paired]] > 0
    matched = paired & partner_fires & (np.nan_to_num(cos, nan=-1) >= thresholds["match_cosine"])
    retained = (
        matched
        & (cos >= thresholds["retained_cosine"])
        & (np.nan_to_num(corr, nan=-1) >= thresholds["retained_correlation"])
    )
    pre = np.where(retained, "retained", np.where(matched, "drifted", "overwritten")).astype(object)
    pre[freq_pre == 0] = "dead"
    ft = np.full(len(freq_ft), "new", dtype=object)
    shared = paired & np.isin(pre, ["retained", "drifted"])
    ft[partner[shared]] = pre[shared]
    ft[freq_ft == 0] = "dead"
    return pre, ft


def diff_table(partner, cos, paired: dict, pre_cat, ft_cat, best: tuple | None = None) -> pl.DataFrame:
    """One row per feature of each side: its partner, the pair's cosine, correlation and frequencies."""
    d_ft = len(ft_cat)
    back = np.full(d_ft, -1, dtype=np.int64)
    back[partner[partner >= 0]] = np.flatnonzero(partner >= 0)
    f_pre, f_ft = paired["freq_pre"], paired["freq_ft"]
    ft_of_pre = np.where(partner >= 0, f_ft[np.maximum(partner, 0)], np.nan)
    pre_of_ft = np.where(back >= 0, f_pre[np.maximum(back, 0)], np.nan)
    pre = pl.DataFrame(
        {
            "side": "pretrained",
            "feature": np.arange(len(partner)),
            "partner": partner,
            "decoder_cos": cos,
            "act_corr": paired["corr"],
            "frequency_pretrained": f_pre,
            "frequency_finetuned": ft_of_pre,
            "category": pre_cat.astype(str),
        }
    )
    cos_ft = np.where(back >= 0, cos[np.maximum(back, 0)], np.nan)
    corr_ft = np.where(back >= 0, paired["corr"][np.maximum(back, 0)], np.nan)
    ft = pl.DataFrame(
        {
            "side": "finetuned",
            "feature": np.arange(d_ft),
            "partner": back,
            "decoder_cos": cos_ft,
            "act_corr": corr_ft,
            "frequency_pretrained": pre_of_ft,
            "frequency_finetuned": f_ft,
            "category": ft_cat.astype(str),
        }
    )
    if best is not None:
        pre = pre.with_columns(pl.Series("best_cos", best[0]))
        ft = ft.with_columns(pl.Series("best_cos", best[1]))
    return pl.concat([pre, ft]).with_columns(
        (pl.col("frequency_finetuned") - pl.col("frequency_pretrained")).alias("delta_frequency"),
        pl.col("feature").cast(pl.Int32),
        pl.col("partner").cast(pl.Int32),
    )


def category_counts(table: pl.DataFrame) -> dict:
    out = {}
    for side, names in (("pretrained", PRE_CATEGORIES), ("finetuned", FT_CATEGORIES)):
        cats = table.filter(pl.col("side") == side)["category"]
        counts = {name: int((cats == name).sum()) for name in names}
        out[side] = {"counts": counts, "fractions": {k: v / max(len(cats), 1) for k, v in counts.items()}}
    return out


def _listed(part: pl.DataFrame, kind: str, pretrained, finetuned) -> pl.DataFrame:
    """Rows of the most-changed table: the kind, both features (a column or a null) and the pair's numbers."""
    return part.select(
        pl.lit(kind).alias("kind"),
        pretrained.alias("pretrained_feature"),
        finetuned.alias("finetuned_feature"),
        "decoder_cos",
        "act_corr",
        "delta_frequency",
    )


def _top_contexts(examples: pl.DataFrame, column: str, variant: str) -> pl.DataFrame:
    """The first three top examples of each feature as text, the centre token in [[brackets]]."""
    return (
        examples.filter(pl.col("kind") == "top")
        .sort(["feature", "rank"])
        .group_by("feature", maintain_order=True)
        .head(3)
        .with_columns(pl.struct("tokens", "center").map_elements(_context_text, return_dtype=pl.Utf8).alias("text"))
        .group_by("feature", maintain_order=True)
        .agg(pl.col("text").alias(f"{variant}_examples"))
        .rename({"feature": column})
    )


def most_changed(table: pl.DataFrame, features: dict, examples: dict, n: int) -> pl.DataFrame:
    """The drifted pairs of lowest cosine x correlation, and the most frequent overwritten and new features,
    with the top tokens and top example contexts of each side."""
    pre = table.filter(pl.col("side") == "pretrained")
    ft = table.filter(pl.col("side") == "finetuned")
    none = pl.lit(None, pl.Int32)
    agreement = (pl.col("decoder_cos") * pl.col("act_corr").fill_nan(0).clip(0, 1)).alias("agreement")
    drifted = pre.filter(pl.col("category") == "drifted").with_columns(agreement).sort("agreement").head(n)
    over = pre.filter(pl.col("category") == "overwritten").sort("frequency_pretrained", descending=True).head(n)
    new = ft.filter(pl.col("category") == "new").sort("frequency_finetuned", descending=True).head(n)
    changed = pl.concat(
        [
            _listed(drifted, "drifted", pl.col("feature"), pl.col("partner")),
            _listed(over, "overwritten", pl.col("feature"), none),
            _listed(new, "new", none, pl.col("feature")),
        ]
    )
    for variant, column in (("pretrained", "pretrained_feature"), ("finetuned", "finetuned_feature")):
        tops = features[variant].select(
            pl.col("feature").alias(column), pl.col("top_tokens").alias(f"{variant}_top_tokens")
        )
        changed = changed.join(tops, on=column, how="left", maintain_order="left").join(
            _top_contexts(examples[variant], column, variant), on=column, how="left", maintain_order="left"
        )
    return changed


def _context_text(example: dict) -> str:
    tokens = list(example["tokens"])
    tokens[example["center"]] = f"[[{tokens[example['center']]}]]"
    return " ".join(tokens)


def outlier_limit(aset: ActivationSet, factor: float, max_tokens: int | None, batch_rows: int) -> float:
    """Token norms above this are outliers: factor x the median norm of the set."""
    limit = aset.n_rows if max_tokens is None else min(max_tokens, aset.n_rows)
    norms, n = [], 0
    for batch in aset.iter_batches(batch_rows):
        batch = batch[: limit - n].astype(np.float32)
        if not len(batch):
            break
        norms.append(np.linalg.norm(batch, axis=1))
        n += len(batch)
    return float(factor * np.median(np.concatenate(norms)))
