"""workflow.analysis.diffing: two SAEs with planted decoder rows (tests.test_diff.constructed) give the known
categories, the most-changed features, the seed floor of a twin identical to the pretrained SAE, and the
transfer of each SAE to the other variant's activations."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tests.test_diff import D_IN, D_SAE, KEPT, REPLACED, ROTATED, SHUFFLED, THRESHOLDS, N, constructed
from workflow.analysis import diffing
from workflow.layout import VARIANTS
from workflow.sae import architecture, recipe_from_dict

CFG = {**THRESHOLDS, "outlier_norm_factor": 10.0, "max_tokens": N // 2, "batch_rows": 512, "n_changed": 3}
NO_MODELS = {"classifier": dict.fromkeys(VARIANTS), "lm": dict.fromkeys(VARIANTS)}


def _folder(sae, folder) -> str:
    """The SAE saved as a folder, under a recipe of its own size (`init_cosines` rebuilds its seeded start)."""
    out = architecture("relu")(D_IN, D_SAE, recipe_from_dict({"architecture": "relu", "d_sae": D_SAE}))
    out.load_state_dict(sae.state_dict())
    study = {"model": "m", "dataset": "d", "sae": "relu", "site": "resid_post", "layer": 1}
    out.save(folder, {"hook_name": "blocks.1.hook_resid_post", "study": study})
    return str(folder)


def _tables() -> dict:
    """Stand-ins for each SAE's features and examples tables: feature i's top token is t<i>, its one top
    example "a [[w<i>]]"."""
    features = pl.DataFrame(
        {"feature": np.arange(D_SAE, dtype=np.int32), "top_tokens": [[f"t{i}"] for i in range(D_SAE)]}
    )
    examples = pl.DataFrame(
        {
            "feature": np.arange(D_SAE, dtype=np.int32),
            "kind": ["top"] * D_SAE,
            "rank": np.zeros(D_SAE, dtype=np.int32),
            "tokens": [["a", f"w{i}"] for i in range(D_SAE)],
            "center": np.ones(D_SAE, dtype=np.int32),
        }
    )
    return {"features": dict.fromkeys(VARIANTS, features), "examples": dict.fromkeys(VARIANTS, examples)}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffing")
    sae_pre, sae_ft, sets = constructed(root)
    saes = {"pretrained": _folder(sae_pre, root / "pre"), "finetuned": _folder(sae_ft, root / "ft")}
    acts = {v: str(s.folder) for v, s in zip(VARIANTS, sets)}
    twin = _folder(sae_pre, root / "twin")  # a seed twin that learned exactly the same features
    found = diffing.compare(saes, acts, None, NO_MODELS, _tables(), CFG, {"batch_size": 8}, "cpu", twin)
    return found, twin


def test_the_planted_relation_gives_every_category(planted):
    found, _ = planted
    assert found.counts["pretrained"]["counts"] == {"retained": 24, "drifted": 24, "overwritten": 16, "dead": 0}
    assert found.counts["finetuned"]["counts"] == {"retained": 24, "drifted": 24, "new": 16, "dead": 0}
    pre = found.matched.table.filter(pl.col("side") == "pretrained")
    category = pre["category"].to_numpy()
    assert set(category[KEPT]) == {"retained"} and set(category[ROTATED + SHUFFLED]) == {"drifted"}
    assert set(category[REPLACED]) == {"overwritten"}
    np.testing.assert_allclose(found.matched.cos[ROTATED], np.cos(np.deg2rad(40)), atol=1e-5)
    assert found.matched.n_tokens == N // 2  # max_tokens: the first half of the rows
    # planted orthonormal decoders are far from the seeded random start both SAEs share
    assert all(abs(c) < 0.3 for c in found.matched.init_cos.values())


def test_the_most_changed_features_carry_their_tokens_and_examples(planted):
    changed = planted[0].changed
    drifted = changed.filter(pl.col("kind") == "drifted")
    # same direction but other tokens: cosine x correlation ~0, below every rotated pair's 0.77
    assert len(drifted) == 3 and set(drifted["pretrained_feature"].to_list()) <= set(SHUFFLED)
    assert drifted["pretrained_feature"].to_list() == drifted["finetuned_feature"].to_list()
    f = drifted["pretrained_feature"][0]
    assert drifted["pretrained_top_tokens"][0].to_list() == [f"t{f}"]
    assert drifted["finetuned_examples"][0].to_list() == [f"a [[w{f}]]"]
    for kind, column in (("overwritten", "pretrained_feature"), ("new", "finetuned_feature")):
        rows = changed.filter(pl.col("kind") == kind)
        assert len(rows) == 3 and set(rows[column].to_list()) <= set(REPLACED)


def test_a_twin_that_learned_the_same_features_is_a_floor_of_all_retained(planted):
    found, twin = planted
    floor = found.baseline["floor"]
    assert found.baseline["sae"] == twin
    assert floor["fractions"] == {"retained": 1.0, "drifted": 0.0, "overwritten": 0.0, "dead": 0.0}
    excess = found.baseline["excess"]
    assert excess["retained"]["excess"] == pytest.approx(24 / 64 - 1) and excess["retained"]["exceeds_floor"] is True
    assert excess["drifted"]["exceeds_floor"] is True and excess["overwritten"]["exceeds_floor"] is True
    assert excess["dead"]["exceeds_floor"] is None and found.baseline["within_floor"] == []


def test_each_sae_reconstructs_its_own_variant_better_than_the_other(planted):
    rows = {(r["sae"], r["activations"]): r for r in planted[0].transfer}
    assert set(rows) == {(s, a) for s in VARIANTS for a in VARIANTS}
    for (sae, acts), row in rows.items():
        assert row["own"] is (sae == acts) and row["n_outliers"] == 0 and row["task_loss_recovered"] is None
    for v in VARIANTS:
        other = VARIANTS[1 - VARIANTS.index(v)]
        # codes relu(<x, d> - 0.05) of 4 planted directions: nearly lossless on the own variant
        assert rows[(v, v)]["explained_variance"] > 0.95
        # the other variant's rotated and replaced directions are (partly) outside the SAE's decoder
        assert rows[(v, other)]["explained_variance"] < rows[(v, v)]["explained_variance"] - 0.1
