"""diff: constructed SAEs of known relation give every category exactly; transfer leaves out outlier-norm tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.sae_helpers import bare_sae
from workflow.analysis import matching
from workflow.sae.metrics import measure
from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir

D_IN, D_SAE, N = 128, 64, 4000
KEPT = list(range(0, 16)) + list(range(56, 64))
ROTATED = list(range(16, 32))  # turned by 40 degrees: cosine 0.766
REPLACED = list(range(32, 48))  # deleted from the fine-tuned SAE; new features take their slots
SHUFFLED = list(range(48, 56))  # same direction, but they fire on other tokens after fine-tuning


def _sae(directions: np.ndarray):
    """ReLU SAE whose encoder and decoder are the (orthonormal) directions: code i = relu(<x, d_i> - 0.05)."""
    sae = bare_sae("relu", D_IN, len(directions))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(directions).float())
        sae.W_enc.copy_(torch.from_numpy(directions.T).float())
        sae.b_enc.fill_(-0.05)
    return sae.eval()


def _set(folder, x):
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, x.shape[1], "float32", 1000, {"site": "resid_post", "layer": 1})
        writer.append(x.astype(np.float32))
        writer.close()
    return ActivationSet(folder)


def constructed(tmp_path, angle_deg=40.0):
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((D_IN, D_IN)))[0].T  # orthonormal rows
    pre = q[:D_SAE].copy()
    ft = pre.copy()
    theta = np.deg2rad(angle_deg)
    for j, i in enumerate(ROTATED):
        ft[i] = np.cos(theta) * q[i] + np.sin(theta) * q[64 + j]
    for j, i in enumerate(REPLACED):
        ft[i] = q[80 + j]
    coef = np.zeros((N, D_SAE))
    for r in range(N):
        coef[r, rng.choice(D_SAE, 4, replace=False)] = rng.uniform(0.5, 2.0, 4)
    coef_ft = coef.copy()
    coef_ft[:, SHUFFLED] = coef[rng.permutation(N)][:, SHUFFLED]
    sets = _set(tmp_path / "pre", coef @ pre), _set(tmp_path / "ft", coef_ft @ ft)
    return _sae(pre), _sae(ft), sets


THRESHOLDS = {"match_cosine": 0.5, "retained_cosine": 0.9, "retained_correlation": 0.7}


def test_constructed_relation_recovers_every_category(tmp_path):
    sae_pre, sae_ft, (set_pre, set_ft) = constructed(tmp_path)
    partner, cos = matching.match_features(
        matching.decoder_cosines(sae_pre.W_dec.detach().numpy(), sae_ft.W_dec.detach().numpy())
    )
    assert list(partner[KEPT + ROTATED + SHUFFLED]) == KEPT + ROTATED + SHUFFLED
    np.testing.assert_allclose(cos[ROTATED], np.cos(np.deg2rad(40)), atol=1e-5)
    paired = matching.paired_activations(sae_pre, sae_ft, set_pre, set_ft, partner, None, 512)
    np.testing.assert_allclose(paired["corr"][KEPT + ROTATED], 1.0, atol=1e-6)
    assert np.abs(paired["corr"][SHUFFLED]).max() < 0.2
    pre_cat, ft_cat = matching.categorize(
        partner, cos, paired["corr"], paired["freq_pre"], paired["freq_ft"], THRESHOLDS
    )
    expected_pre = np.empty(D_SAE, object)
    expected_pre[KEPT], expected_pre[ROTATED], expected_pre[SHUFFLED], expected_pre[REPLACED] = (
        "retained",
        "drifted",
        "drifted",
        "overwritten",
    )
    expected_ft = expected_pre.copy()
    expected_ft[REPLACED] = "new"
    assert list(pre_cat) == list(expected_pre)
    assert list(ft_cat) == list(expected_ft)
    table = matching.diff_table(partner, cos, paired, pre_cat, ft_cat)
    counts = matching.category_counts(table)
    assert counts["pretrained"]["counts"] == {"retained": 24, "drifted": 24, "overwritten": 16, "dead": 0}
    assert counts["finetuned"]["counts"] == {"retained": 24, "drifted": 24, "new": 16, "dead": 0}
    # sign convention: fine-tuned minus pretrained
    row = table.filter((table["side"] == "pretrained") & (table["feature"] == 0)).row(0, named=True)
    assert row["delta_frequency"] == row["frequency_finetuned"] - row["frequency_pretrained"]


def test_a_small_turn_is_retained_and_dead_features_are_their_own_category(tmp_path):
    sae_pre, sae_ft, (set_pre, set_ft) = constructed(tmp_path, angle_deg=10.0)  # cosine 0.985
    with torch.no_grad():
        sae_ft.b_enc[0] = -100.0  # fine-tuned feature 0 never fires: its pretrained partner is overwritten
    live = {
        v: matching.firing_frequency(s, aset, float("inf"), None, 512, "cpu") > 0
        for v, s, aset in (("pre", sae_pre, set_pre), ("ft", sae_ft, set_ft))
    }
    assert live["pre"].all() and list(np.flatnonzero(~live["ft"])) == [0]
    sim = matching.decoder_cosines(sae_pre.W_dec.detach().numpy(), sae_ft.W_dec.detach().numpy())
    partner, cos = matching.match_features(sim, live["pre"], live["ft"])
    assert 0 not in partner  # a dead feature takes no live feature's partner
    best_pre, best_ft = matching.best_cosines(sim, live["pre"], live["ft"])
    assert best_pre[1] == pytest.approx(1.0, abs=1e-6) and best_pre[0] < 0.5
    paired = matching.paired_activations(sae_pre, sae_ft, set_pre, set_ft, partner, None, 512)
    pre_cat, ft_cat = matching.categorize(
        partner, cos, paired["corr"], paired["freq_pre"], paired["freq_ft"], THRESHOLDS
    )
    assert set(pre_cat[ROTATED]) == {"retained"}
    assert pre_cat[0] == "overwritten" and ft_cat[0] == "dead"


def test_outlier_tokens_do_not_decide_the_correlation(tmp_path):
    sae_pre, sae_ft, _ = constructed(tmp_path)
    rng = np.random.default_rng(1)
    coef = rng.uniform(0.5, 2.0, (N, D_SAE)) * (rng.random((N, D_SAE)) < 0.1)
    coef[0] = 1.0  # the outlier token carries every feature
    pre_x, ft_x = coef @ sae_pre.W_dec.detach().numpy(), coef[rng.permutation(N)] @ sae_pre.W_dec.detach().numpy()
    pre_x[0] *= 1000.0  # one huge token, present in both: alone it would make every correlation ~1
    ft_x[0] = pre_x[0]  # (row 0 of ft_x came from a permuted row: replace it)
    set_pre, set_ft = _set(tmp_path / "p", pre_x), _set(tmp_path / "f", ft_x)
    partner = np.arange(D_SAE)
    raw = matching.paired_activations(sae_pre, sae_pre, set_pre, set_ft, partner, None, 512)
    limits = {
        "pretrained": matching.outlier_limit(set_pre, 10.0, None, 512),
        "finetuned": matching.outlier_limit(set_ft, 10.0, None, 512),
    }
    masked = matching.paired_activations(sae_pre, sae_pre, set_pre, set_ft, partner, None, 512, limits)
    assert np.nanmedian(raw["corr"]) > 0.9 and np.nanmedian(np.abs(masked["corr"])) < 0.1
    assert masked["n_tokens"] == N - 1


def test_transfer_leaves_out_outlier_norm_tokens(tmp_path):
    sae_pre, _, (set_pre, _) = constructed(tmp_path)
    x = set_pre.read_all()
    x[7] *= 1000.0
    outlier_set = _set(tmp_path / "outlier", x)
    limit = matching.outlier_limit(outlier_set, 10.0, None, 512)
    stats, outliers = measure(sae_pre, outlier_set, None, 512, max_norm=limit)
    clean_stats, clean_outliers = measure(
        sae_pre, set_pre, None, 512, max_norm=matching.outlier_limit(set_pre, 10.0, None, 512)
    )
    rec, clean = stats.result(), clean_stats.result()
    assert outliers == 1 and clean_outliers == 0
    assert rec["n_tokens"] == N - 1
    assert abs(rec["explained_variance"] - clean["explained_variance"]) < 0.01


def test_the_seed_floor_excess_and_its_interval():
    from workflow.analysis.matching import floor_excess

    out = floor_excess({"retained": 0.10, "drifted": 0.80, "overwritten": 0.05, "dead": 0.05},
                       {"retained": 0.70, "drifted": 0.10, "overwritten": 0.15, "dead": 0.05}, 768, 768)  # fmt: skip
    assert out["retained"]["excess"] == pytest.approx(-0.6) and out["retained"]["exceeds_floor"] is True
    assert out["drifted"]["exceeds_floor"] is True
    assert out["overwritten"]["exceeds_floor"] is False  # fewer overwritten than between seeds
    half = 1.96 * np.sqrt(0.8 * 0.2 / 768 + 0.1 * 0.9 / 768)
    assert out["drifted"]["low"] == pytest.approx(0.7 - half) and out["drifted"]["high"] == pytest.approx(0.7 + half)
    same = floor_excess({"drifted": 0.11}, {"drifted": 0.10}, 768, 768)
    assert same["drifted"]["exceeds_floor"] is False  # within noise


@pytest.mark.workflow
def test_a_killed_diff_job_reruns_to_the_same_diff(kill_study, tmp_path):
    from tests.kills import KillRun
    from workflow.layout import DIFF

    folder = "results/analysis/bert/news/resid_post/L2/topk"
    clean, killed, _ = KillRun(kill_study, "diff", f"{folder}/diff.json", tmp_path).run(seed=4)
    KillRun.assert_same(clean, killed, *(f"{folder}/{name}" for name in DIFF.names.values()))
