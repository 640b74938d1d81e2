"""workflow.analysis.crosscoding on planted crosscoder weights: the relative decoder norm, class and
category of latents whose decoders were set by hand, the counts of them, and a lossless crosscoder's FVU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workflow.analysis import crosscoding
from workflow.sae.crosscoder import Crosscoder, CrosscoderRecipe
from workflow.store.activations import ActivationSet, ActivationWriter, PairedSets
from workflow.store.files import atomic_dir

CFG = {
    "pretrained_only": 0.1,
    "finetuned_only": 0.9,
    "shared_band": 0.1,
    "nu_error_max": 0.2,
    "nu_reconstruction_max": 0.5,
    "retained_cosine": 0.9,
}
SIDE = 4


def _planted() -> Crosscoder:
    """Six latents, decoders (pretrained side | fine-tuned side) over the unit vectors e_i of one side:
    0 writes e0 | 0, 1 writes 0 | e1, 2 writes e2 | e2, 3 writes 2 e3 | e3, 4 writes e0 | e1
    (equal norms, orthogonal), 5 writes e2 | e2 (it will never fire)."""
    cc = Crosscoder(2 * SIDE, 6, CrosscoderRecipe(k=2, d_sae=6))
    e = torch.eye(SIDE)
    zero = torch.zeros(SIDE)
    rows = [(e[0], zero), (zero, e[1]), (e[2], e[2]), (2 * e[3], e[3]), (e[0], e[1]), (e[2], e[2])]
    with torch.no_grad():
        cc.W_dec.copy_(torch.stack([torch.cat(r) for r in rows]))
    return cc


def test_relative_norm_is_zero_one_and_a_half_at_the_extremes_and_at_balance():
    norms = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(crosscoding.relative_norm(norms), [0.0, 1.0, 0.5, 0.25, 0.5])


def test_planted_decoders_give_their_norms_classes_and_categories():
    cc = _planted()
    stats = {
        "frequency": np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.0]),
        "mean_activation": np.full(6, 0.5),
        "nu_error": np.array([0.05, 0.5, 0.0, 0.0, 0.0, 0.0]),  # latent 1: the other side carries it too
        "nu_reconstruction": np.array([0.1, 0.1, 0.0, 0.0, 0.0, 0.0]),
    }
    table = crosscoding.latent_table(cc, stats, CFG)
    np.testing.assert_allclose(table["norm_pretrained"], [1, 0, 1, 2, 1, 1])
    np.testing.assert_allclose(table["norm_finetuned"], [0, 1, 1, 1, 1, 1])
    np.testing.assert_allclose(table["relative_norm"], [0.0, 1.0, 0.5, 0.25, 0.5, 0.5])
    assert table["class"].to_list() == ["pretrained_only", "finetuned_only", "shared", "other", "shared", "shared"]
    np.testing.assert_allclose(table["decoder_cos"], [0, 0, 1, 1, 0, 1], atol=1e-6)
    assert table["category"].to_list() == ["removed", "new", "kept", "changed", "changed", "dead"]
    assert table["robust"].to_list() == [True, False, False, False, False, False]
    assert np.isnan(table["nu_error"][2])  # latent scaling is reported for side-specific latents only
    counts = crosscoding.latent_counts(table)
    assert counts["classes"] == {"pretrained_only": 1, "shared": 2, "finetuned_only": 1, "other": 1}
    assert counts["robust"] == {"pretrained_only": 1, "finetuned_only": 0}
    assert counts["categories"] == {"kept": 1, "changed": 2, "removed": 1, "new": 1, "dead": 1}
    assert counts["shared_decoder_cos_median"] == pytest.approx(0.5)  # live shared latents: cosines 1 and 0


def _set(folder, x: np.ndarray) -> ActivationSet:
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, x.shape[1], "float32", 1000, {"site": "resid_post", "layer": 1})
        writer.append(x.astype(np.float32))
        writer.close()
    return ActivationSet(folder)


def test_a_lossless_crosscoder_has_no_unexplained_variance(tmp_path):
    """Latents +/- each input dimension (relu(x) - relu(-x) = x), each writing back its own side: FVU 0 on
    both sides, and every latent fires on half of the tokens of a symmetric distribution."""
    d = 2 * SIDE
    cc = Crosscoder(d, 2 * d, CrosscoderRecipe(k=2 * d, d_sae=2 * d)).eval()
    eye = torch.eye(d)
    with torch.no_grad():
        cc.W_enc.copy_(torch.cat([eye, -eye], 1))
        cc.W_dec.copy_(torch.cat([eye, -eye], 0))
        for p in (cc.b_enc, cc.b_dec, cc.threshold):
            p.zero_()
    x = np.random.default_rng(0).standard_normal((2000, d))
    paired = PairedSets(_set(tmp_path / "pre", x[:, :SIDE]), _set(tmp_path / "ft", x[:, SIDE:]))
    stats = crosscoding.statistics(cc, paired, None, 512)
    assert stats["n_tokens"] == 2000 and stats["dead_fraction"] == 0.0
    assert stats["fvu"]["pretrained"] == pytest.approx(0.0, abs=1e-10)
    assert stats["fvu"]["finetuned"] == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(stats["frequency"], 0.5, atol=0.05)
    assert stats["l0"] == pytest.approx(stats["frequency"].sum())
