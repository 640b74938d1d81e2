"""The diff with a known answer: two activation sets from one dictionary of atoms, some kept, some
rotated 45 degrees, some removed, some new. The crosscoder and stage-wise fine-tuning each recover
every category with F1 >= 0.9; the matching of two SAEs is scored beside them (plain and with its
seed baseline), and the scores can fail: a method given the wrong answer scores low."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.analysis import synthetic
from workflow.sae.crosscoder import CrosscoderRecipe
from workflow.sae.topk import TopKRecipe

THRESHOLDS = {
    "match_cosine": 0.5,
    "retained_cosine": 0.9,
    "retained_correlation": 0.7,
    "batch_rows": 4096,
    "shared_band": 0.1,
    "pretrained_only": 0.1,
    "finetuned_only": 0.9,
    "nu_error_max": 0.2,
    "nu_reconstruction_max": 0.5,
    "removed_frequency": 0.1,
}
COMMON = {"lr": 5e-3, "batch_size": 512, "train_tokens": 300_000, "dead_tokens": 5000, "log_every": 1000}


def test_the_pair_has_the_declared_changes():
    pair = synthetic.make_pair(d=256, n_atoms=48, angle=45.0, seed=1)  # wide: atoms nearly orthogonal
    truth = pair.truth()
    assert {c: int((truth == c).sum()) for c in synthetic.CATEGORIES} == {
        "kept": 32,
        "changed": 8,
        "removed": 8,
        "new": 8,
    }
    changed = np.flatnonzero(pair.category == "changed")
    cos = (pair.atoms_pre[changed] * pair.atoms_ft[pair.ft_index[changed]]).sum(1)
    np.testing.assert_allclose(cos, np.cos(np.deg2rad(45.0)), atol=1e-9)
    kept = np.flatnonzero(pair.category == "kept")
    np.testing.assert_allclose(pair.atoms_ft[pair.ft_index[kept]], pair.atoms_pre[kept])
    assert (pair.ft_index[pair.category == "removed"] == -1).all()
    x_pre, x_ft = pair.sample(2000, seed=0)
    # removed atoms are absent from the fine-tuned rows, present in the pretrained ones
    removed = pair.atoms_pre[pair.category == "removed"]
    fires = lambda x: (np.abs((x - pair.offset) @ removed.T) > 0.4).mean()  # noqa: E731
    assert fires(x_ft) < 0.01 < 0.05 < fires(x_pre)


def test_scores_fail_a_wrong_answer():
    truth = np.array(["kept"] * 6 + ["changed", "removed", "new"], dtype=object)
    assert synthetic.score(truth, truth)["min_f1"] == 1.0
    wrong = np.array(["kept"] * 9, dtype=object)
    result = synthetic.score(truth, wrong)
    assert result["categories"]["new"]["f1"] == 0.0 and result["kappa"] == 0.0


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    pair = synthetic.make_pair(d=64, n_atoms=96, angle=45.0, seed=0)
    sae = TopKRecipe(architecture="topk", k=4, d_sae=128, **COMMON)
    crosscoder = CrosscoderRecipe(k=6, d_sae=192, **COMMON)
    return synthetic.compare_methods(
        pair, tmp_path_factory.mktemp("synthetic"), sae, crosscoder, {"steps": 100, "lr": None}, THRESHOLDS
    )


@pytest.mark.parametrize("method", ["crosscoder", "stagewise"])
def test_crosscoder_and_stagewise_recover_every_category(scores, method):
    f1 = {c: v["f1"] for c, v in scores[method]["categories"].items()}
    assert min(f1.values()) >= 0.9, f1


def test_the_matching_is_scored_beside_them_with_its_seed_floor(scores):
    for method in ("matching", "matching_seed_corrected"):
        assert set(scores[method]["categories"]) == set(synthetic.CATEGORIES)
        assert scores[method]["macro_f1"] > 0.7  # it works on this clean case, if less well
    floor = scores["seed_floor"]
    assert abs(sum(floor.values()) - 1.0) < 1e-9 and floor["retained"] > 0.5
    quality = scores["crosscoder_quality"]
    assert max(quality["fvu"].values()) < 0.1 and 4 < quality["l0"] < 7
