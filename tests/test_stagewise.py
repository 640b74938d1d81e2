"""Stage `stagewise` on a synthetic pair with a known answer: the pretrained SAE, trained on for a
few steps on the fine-tuned activations, keeps the features of kept atoms in place, turns those of
rotated atoms by about the rotation, and loses those of removed atoms."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workflow.analysis import synthetic
from workflow.sae import load
from workflow.sae.topk import TopKRecipe
from workflow.sae.training import train
from workflow.stages import stagewise
from workflow.store.files import read_json

CFG = {
    "steps": 200,
    "lr": None,
    "removed_frequency": 0.1,
    "max_tokens": None,
    "batch_rows": 4096,
    "match_cosine": 0.5,
    "retained_cosine": 0.9,
    "retained_correlation": 0.7,
    "outlier_norm_factor": 10,
}


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    root = tmp_path_factory.mktemp("stagewise")
    pair = synthetic.make_pair(d=64, n_atoms=96, seed=4)
    sets = {
        split: synthetic.write_sets(pair, root / "acts", n, split) for split, n in (("train", 30000), ("test", 8000))
    }
    recipe = TopKRecipe(
        architecture="topk", k=4, d_sae=128, lr=5e-3, batch_size=512, train_tokens=300_000, dead_tokens=5000
    )
    train(
        str(sets["train"]["pretrained"]),
        recipe,
        str(root / "sae"),
        {"study": {"sae": "topk", "site": "resid_post", "layer": 1}},
    )
    summary = stagewise.run(
        str(root / "sae"),
        str(sets["train"]["finetuned"]),
        {v: str(sets["test"][v]) for v in sets["test"]},
        CFG,
        str(root / "sw"),
    )
    return pair, root, summary


def test_features_move_as_their_atoms_did(moved):
    pair, root, summary = moved
    table = pl.read_parquet(root / "sw" / "movement.parquet")
    start = load(root / "sae").W_dec.detach().numpy()
    cat = table["category_pretrained"].to_numpy()
    dec = table["decoder_cos"].to_numpy()
    found = {
        c: synthetic.best_features(start, pair.atoms_pre[pair.category == c], 0.9)
        for c in ("kept", "changed", "removed")
    }
    for c, idx in found.items():
        assert (idx >= 0).mean() >= 0.85, c
    assert (cat[found["kept"][found["kept"] >= 0]] == "kept").mean() >= 0.85
    assert (cat[found["removed"][found["removed"] >= 0]] == "removed").mean() >= 0.85
    turned = found["changed"][found["changed"] >= 0]
    assert (cat[turned] == "changed").mean() >= 0.85
    assert np.median(dec[turned]) == pytest.approx(np.cos(np.deg2rad(45)), abs=0.1)
    # the end SAE's features of new atoms are latents that fired on nothing before, or were repurposed
    end = load(root / "sw").W_dec.detach().numpy()
    new = synthetic.best_features(end, pair.new_atoms(), 0.9)
    assert (new >= 0).mean() >= 0.85
    assert (table["category_finetuned"].to_numpy()[new[new >= 0]] == "new").mean() >= 0.85
    saved = read_json(root / "sw" / "stagewise.json")
    assert saved["categories"] == summary["categories"] and saved["steps"] == 200
    assert saved["most_moved"][0]["decoder_cos"] <= np.median(dec)


def test_the_end_sae_is_a_sae_folder_that_starts_where_the_pretrained_one_ended(moved):
    _, root, _ = moved
    cfg = read_json(root / "sw" / "cfg.json")
    assert cfg["architecture"] == "topk" and cfg["metadata"]["study"]["stagewise_from"] == str(root / "sae")
    start, end = load(root / "sae"), load(root / "sw")
    assert float(start.cfg["metadata"]["activation_scale"]) == float(end.cfg["metadata"]["activation_scale"])
