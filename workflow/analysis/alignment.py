"""How well one SAE's latents line up with known binary factors of the tokens (stage `emergence`).

``best_f1``: for each factor, the best F1 of one latent's "fires" (code > 0) as a detector of the
factor's tokens. ``best_threshold_f1``: the same with a threshold a fraction of the latent's largest
activation, as Karvonen et al. 2024 score board-game SAEs. ``mcc``: the mean correlation coefficient
after matching latents to factors one to one (Hungarian on |Pearson correlation| of latent
activations with the factor indicators), the standard score of identifiability work (e.g.
Khemakhem et al. 2020).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import polars as pl

from workflow.layout import Target

log = logging.getLogger(__name__)


def best_f1(codes: np.ndarray, member: np.ndarray) -> tuple[int, float, float, float]:
    """The latent whose firing best detects `member` tokens: (latent, F1, precision, recall).
    codes: (n_tokens, d_sae); member: (n_tokens,) bool."""
    fires = codes > 0
    tp = (fires & member[:, None]).sum(0).astype(np.float64)
    n_fire = fires.sum(0).astype(np.float64)
    n_member = float(member.sum())
    precision = np.divide(tp, n_fire, out=np.zeros_like(tp), where=n_fire > 0)
    recall = tp / max(n_member, 1.0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    i = int(np.argmax(f1))
    return i, float(f1[i]), float(precision[i]), float(recall[i])


THRESHOLDS = tuple(i / 10 for i in range(10))  # fractions of a latent's largest activation


def best_threshold_f1(codes: np.ndarray, member: np.ndarray, fractions=THRESHOLDS) -> tuple[int, float, float]:
    """The latent and threshold whose firing above it best detects `member` tokens, the threshold a
    fraction of the latent's largest activation on these tokens (as Karvonen et al. 2024 score
    board-game SAE features): (latent, F1, fraction). Fraction 0 is `best_f1`'s rule; a latent
    that fires weakly beside its factor scores higher here."""
    top = codes.max(0)
    n_member = max(float(member.sum()), 1.0)
    best = (0, 0.0, 0.0)
    for fraction in fractions:
        fires = codes > fraction * top
        tp = (fires & member[:, None]).sum(0).astype(np.float64)
        precision = tp / np.maximum(fires.sum(0), 1)
        recall = tp / n_member
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=tp > 0)
        i = int(np.argmax(f1))
        if f1[i] > best[1]:
            best = (i, float(f1[i]), float(fraction))
    return best


def correlations(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(d_sae, n_factors) Pearson correlations of latent activations with factor indicators (0 for a
    constant column)."""
    a = codes - codes.mean(0)
    b = factors - factors.mean(0)
    na, nb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    c = a.T @ b
    denom = np.outer(na, nb)
    return np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)


def mcc(codes: np.ndarray, factors: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean |correlation| after the one-to-one matching of latents to factors; with each factor's
    matched latent and its correlation."""
    from scipy.optimize import linear_sum_assignment

    corr = np.abs(correlations(codes.astype(np.float64), factors.astype(np.float64)))
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matched = np.full(factors.shape[1], -1)
    matched[cols] = rows
    values = np.zeros(factors.shape[1])
    values[cols] = corr[rows, cols]
    return float(values.mean()), matched, values


THRESHOLD_COLUMNS = ("threshold_latent", "threshold_f1", "threshold_fraction")


def factor_rows(codes: np.ndarray, indicators: np.ndarray, factors: list[str]) -> tuple[float, list[dict]]:
    """One SAE's MCC, and per factor its best latent (`best_f1`, `best_threshold_f1`) and its
    matched latent. codes: (n_tokens, d_sae); indicators: (n_tokens, n_factors) bool."""
    score, matched, corr = mcc(codes, indicators)
    rows = []
    for j, c in enumerate(factors):
        latent, f1, precision, recall = best_f1(codes, indicators[:, j])
        at_threshold = zip(THRESHOLD_COLUMNS, best_threshold_f1(codes, indicators[:, j]))
        rows.append(
            {
                "factor": c,
                "latent": latent,
                "f1": f1,
                "precision": precision,
                "recall": recall,
                **dict(at_threshold),
                "matched_latent": int(matched[j]),
                "matched_correlation": float(corr[j]),
            }
        )
    return score, rows


def sae_alignment(encoded: Iterable[tuple[str, Target, np.ndarray]], member: dict[str, np.ndarray]) -> tuple:
    """Per SAE: each factor's row (`factor_rows`, tagged with the SAE's recipe, site and layer) and
    its summary (MCC, width). encoded: (recipe, target, codes (n_tokens, d_sae)) per SAE, on the
    tokens of `member` (factor -> (n_tokens,) bool)."""
    factors = list(member)
    rows, summaries = [], []
    for recipe, target, codes in encoded:
        indicators = np.stack([member[c] for c in factors], 1)
        score, found = factor_rows(codes, indicators, factors)
        where = {"sae": recipe, "site": target.site, "layer": target.layer}
        rows += [{**where, **row} for row in found]
        summaries.append({**where, "mcc": score, "d_sae": codes.shape[1]})
        roots = [r["f1"] for r in found if r["factor"].startswith("root_")]
        log.info("%s %s L%s: MCC %.3f; roots' best F1 min %.3f", recipe, target.site, target.layer, score, min(roots))
    return rows, summaries


def table(rows: list[dict]) -> pl.DataFrame:
    """The alignment rows as a table (with its key columns where there is no SAE)."""
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"sae": pl.Utf8, "factor": pl.Utf8, "f1": pl.Float64})
