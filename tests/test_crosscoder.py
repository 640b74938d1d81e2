"""Stage `crosscoder` on a synthetic pair with a known answer: removed atoms get pretrained-only
latents, new atoms fine-tuned-only ones, kept atoms shared latents with equal decoders; the saved
folder loads back to the same crosscoder; latent scaling flags a latent that only looks
fine-tuned-only because its pretrained decoder was shrunk to zero (Complete Shrinkage)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from workflow.analysis import crosscoding, synthetic
from workflow.sae.crosscoder import SIDES, load
from workflow.stages import crosscoder as stage
from workflow.store.activations import ActivationSet, PairedSets
from workflow.store.files import read_json

RECIPE = {
    "k": 6,
    "d_sae": 192,
    "lr": 5e-3,
    "batch_size": 512,
    "train_tokens": 300_000,
    "dead_tokens": 5000,
    "log_every": 500,
}
CFG = {
    "pretrained_only": 0.1,
    "finetuned_only": 0.9,
    "shared_band": 0.1,
    "nu_error_max": 0.2,
    "nu_reconstruction_max": 0.5,
    "max_tokens": None,
    "batch_rows": 4096,
    "retained_cosine": 0.9,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("crosscoder")
    pair = synthetic.make_pair(d=64, n_atoms=96, seed=3)
    sets = {
        split: synthetic.write_sets(pair, root / "acts", n, split) for split, n in (("train", 30000), ("test", 8000))
    }
    out = root / "cc"
    summary = stage.run(
        {v: str(sets["train"][v]) for v in SIDES},
        {v: str(sets["test"][v]) for v in SIDES},
        RECIPE,
        "cc",
        CFG,
        "synthetic",
        str(out),
    )
    return pair, sets, out, summary


def _latent_of(decoder: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    return synthetic.best_features(decoder, atoms, 0.9)


def test_latent_classes_follow_the_planted_changes(trained):
    pair, _, out, summary = trained
    table = pl.read_parquet(out / "latents.parquet")
    cc = load(out)
    W = cc.W_dec.detach().numpy()
    pre_side, ft_side = W[:, : cc.side], W[:, cc.side :]
    cls = table["class"].to_numpy()
    removed = _latent_of(pre_side, pair.atoms_pre[pair.category == "removed"])
    new = _latent_of(ft_side, pair.new_atoms())
    kept = _latent_of(pre_side, pair.atoms_pre[pair.category == "kept"])
    assert (removed >= 0).mean() >= 0.85 and (new >= 0).mean() >= 0.85 and (kept >= 0).mean() >= 0.85
    assert (cls[removed[removed >= 0]] == "pretrained_only").mean() >= 0.9
    assert (cls[new[new >= 0]] == "finetuned_only").mean() >= 0.9
    assert (cls[kept[kept >= 0]] == "shared").mean() >= 0.9
    cos = table["decoder_cos"].to_numpy()
    assert np.median(cos[kept[kept >= 0]]) > 0.95  # a kept atom: both decoders point the same way
    changed = _latent_of(pre_side, pair.atoms_pre[pair.category == "changed"])
    # a rotated atom: one shared latent whose two decoders are the rotation apart (cos 45 deg = 0.71)
    assert np.median(cos[changed[changed >= 0]]) == pytest.approx(np.cos(np.deg2rad(45)), abs=0.1)
    # truly new latents pass latent scaling: the pretrained model does not carry their direction
    robust = table["robust"].to_numpy()
    assert robust[new[new >= 0]].mean() >= 0.9
    assert summary["classes"]["finetuned_only"] >= 0.85 * pair.n_new and max(summary["fvu"].values()) < 0.15
    assert read_json(out / "crosscoder.json")["robust"]["finetuned_only"] >= 0.85 * pair.n_new


def test_the_saved_crosscoder_reads_and_writes_raw_activations(trained):
    pair, sets, out, _ = trained
    cc = load(out)
    x = PairedSets(*(ActivationSet(sets["test"][v]) for v in SIDES)).rows(np.arange(500))
    saved = cc.saelens_tensors()
    xt = torch.from_numpy(x)
    pre = sum((xt[:, i * cc.side : (i + 1) * cc.side] - saved["b_dec"][i]) @ saved["W_enc"][i] for i in range(2))
    pre = pre + saved["b_enc"]
    acts = pre.relu() * (pre > saved["threshold"])  # the folder's JumpReLU form
    with torch.no_grad():
        torch.testing.assert_close(acts, cc.encode(xt), atol=1e-4, rtol=1e-4)
        recon_ft = acts @ saved["W_dec"][1] + saved["b_dec"][1]
        torch.testing.assert_close(recon_ft, cc.decode_side(cc.encode(xt), 1), atol=1e-4, rtol=1e-4)
    fvu = ((recon_ft.numpy() - x[:, cc.side :]) ** 2).sum() / ((x[:, cc.side :] - x[:, cc.side :].mean(0)) ** 2).sum()
    assert fvu < 0.15


def test_latent_scaling_flags_a_shrunk_decoder(trained):
    """Zero the pretrained decoder of shared latents: by decoder norms they become fine-tuned-only,
    but the pretrained activations still carry their direction, so nu (error) is high; the truly
    new latents keep a low nu."""
    pair, sets, out, _ = trained
    cc = load(out)
    table = pl.read_parquet(out / "latents.parquet")
    shared = np.flatnonzero((table["class"] == "shared").to_numpy() & (table["frequency"] > 0.02).to_numpy())[:5]
    with torch.no_grad():
        cc.W_dec[shared, : cc.side] = 0.0
    test = PairedSets(*(ActivationSet(sets["test"][v]) for v in SIDES))
    stats = crosscoding.statistics(cc, test, None, 4096)
    shrunk = crosscoding.latent_table(cc, stats, CFG)
    assert (shrunk["class"].to_numpy()[shared] == "finetuned_only").all()
    assert (stats["nu_error"][shared] > 0.5).all(), stats["nu_error"][shared]
    assert not shrunk["robust"].to_numpy()[shared].any()
    W = cc.W_dec.detach().numpy()
    new = _latent_of(W[:, cc.side :], pair.new_atoms())
    assert np.median(stats["nu_error"][new[new >= 0]]) < 0.2
