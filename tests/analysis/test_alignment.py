"""SAE-latent alignment: best single-latent F1 (firing and at a threshold), Pearson correlations and the
matched MCC, on codes with planted latents whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.analysis import alignment
from workflow.layout import Target

RNG = np.random.default_rng(0)


def planted(n: int = 2000):
    """Three factors at rate 0.2; latent 4 carries factor 0 and latent 1 factor 1 exactly, latent 2
    fires on half of factor 2's tokens, latent 0 is noise at rate 0.5; latents 3 and 5 are silent."""
    factors = (RNG.random((n, 3)) < 0.2).astype(int)
    codes = np.zeros((n, 6))
    codes[:, 4] = factors[:, 0] * RNG.uniform(1, 2, n)
    codes[:, 1] = factors[:, 1] * RNG.uniform(1, 2, n)
    codes[:, 2] = factors[:, 2] * RNG.uniform(1, 2, n) * (RNG.random(n) < 0.5)
    codes[:, 0] = RNG.random(n) < 0.5
    return codes, factors


def test_best_f1_and_mcc_find_planted_latents():
    codes, factors = planted()
    assert alignment.best_f1(codes, factors[:, 0].astype(bool))[:2] == (4, 1.0)
    latent, f1, precision, recall = alignment.best_f1(codes, factors[:, 2].astype(bool))
    assert latent == 2 and precision == 1.0 and 0.4 < recall < 0.6
    assert f1 == pytest.approx(2 * recall / (1 + recall))
    score, matched, corr = alignment.mcc(codes, factors)
    assert matched.tolist() == [4, 1, 2] and corr[0] > 0.8 and 0.3 < score < 1.0
    assert score == pytest.approx(corr.mean())


def test_best_f1_of_a_latent_that_fires_on_exactly_a_known_share():
    member = np.zeros(100, bool)
    member[:20] = True
    codes = np.zeros((100, 2))
    codes[:10, 1] = 1.0  # half the members: precision 1, recall 1/2, F1 2/3
    codes[:40, 0] = 1.0  # every member and 20 others: precision 1/2, recall 1, F1 2/3 too; latent 0 first
    assert alignment.best_f1(codes, member) == (0, pytest.approx(2 / 3), 0.5, 1.0)
    codes[:40, 0] = 0.0
    assert alignment.best_f1(codes, member) == (1, pytest.approx(2 / 3), 1.0, 0.5)


def test_threshold_f1_finds_a_weak_background_latent():
    member = RNG.random(2000) < 0.2
    # latent 0 fires weakly everywhere and strongly on members: F1 1 only above a threshold
    codes = np.stack([np.where(member, 1.0, 0.05), RNG.random(2000) * 0.5], 1)
    assert alignment.best_threshold_f1(codes, member, [0.0])[1] < 0.5
    assert alignment.best_threshold_f1(codes, member) == (0, 1.0, 0.1)  # the first fraction above 0.05


def test_correlations_are_pearsons_and_zero_for_a_constant_column():
    codes, factors = planted(500)
    corr = alignment.correlations(codes, factors.astype(float))
    for i in (0, 1, 2, 4):
        for j in range(3):
            assert corr[i, j] == pytest.approx(np.corrcoef(codes[:, i], factors[:, j])[0, 1])
    assert (corr[[3, 5]] == 0).all()  # silent latents


def test_sae_alignment_tags_each_factor_row_with_its_sae():
    codes, factors = planted()
    member = {f"root_{j}": factors[:, j].astype(bool) for j in range(3)}
    encoded = [("topk", Target("resid_post", 2), codes), ("relu", Target("resid_post", 1), codes[:, ::-1])]
    rows, summaries = alignment.sae_alignment(iter(encoded), member)
    assert [(r["sae"], r["layer"], r["factor"]) for r in rows[:3]] == [("topk", 2, f"root_{j}") for j in range(3)]
    assert [r["latent"] for r in rows[:3]] == [4, 1, 2] and [r["latent"] for r in rows[3:]] == [1, 4, 3]
    assert [r["matched_latent"] for r in rows[3:]] == [1, 4, 3]
    assert rows[0]["f1"] == 1.0 and rows[0]["threshold_f1"] == 1.0 and rows[0]["threshold_fraction"] == 0.0
    assert [s["sae"] for s in summaries] == ["topk", "relu"] and summaries[0]["d_sae"] == 6
    assert summaries[0]["mcc"] == pytest.approx(summaries[1]["mcc"])  # the same latents, reversed
    table = alignment.table(rows)
    assert len(table) == 6 and table.columns[:4] == ["sae", "site", "layer", "factor"]
    assert alignment.table([]).columns == ["sae", "factor", "f1"]
