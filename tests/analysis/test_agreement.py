"""workflow.analysis.agreement: each SAE feature's nearest crosscoder latent and the methods' labels, on
planted decoders and tables."""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.analysis import agreement


def test_each_feature_finds_the_latent_pointing_its_way_and_labels_only_through_a_close_one():
    sae_decoder = np.eye(3)  # features along e0, e1, e2
    pre_side = np.array([[0.0, 3.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.6, 0.8]])  # latents along e1, e0, (e1 + e2)
    latents = pl.DataFrame(
        {
            "class": ["shared", "pretrained_only", "other"],
            "relative_norm": [0.5, 0.0, 0.3],
            "category": ["kept", "removed", "changed"],
        }
    )
    diff = pl.DataFrame({"feature": [0, 1, 2], "category": ["retained", "overwritten", "dead"]})
    movement = pl.DataFrame(
        {
            "feature": [0, 1, 2],
            "category_pretrained": ["kept", "changed", "dead"],
            "decoder_cos": [0.99, 0.7, 0.1],
            "movement": [0.01, 0.3, 0.9],
        }
    )
    rows, methods = agreement.method_table(diff, movement, sae_decoder, {"cc": (pre_side, latents)})
    assert methods == ["matching", "stagewise", "cc"]
    assert rows["cc_latent"].to_list() == [1, 0, 2]
    np.testing.assert_allclose(rows["cc_cos"], [1.0, 1.0, 0.8])
    assert rows["cc_category"].to_list() == ["removed", "kept", "changed"]
    assert rows["matching"].to_list() == ["kept", "removed", "dead"]
    # dead features and latents that point elsewhere (cosine below match_cosine) give no label
    assert agreement.method_labels(rows, "matching", 0.9).tolist() == ["kept", "removed", ""]
    assert agreement.method_labels(rows, "cc", 0.9).tolist() == ["removed", "kept", ""]
    summary = agreement.summary(rows, methods, 0.9)
    assert summary["counts"]["stagewise"] == {"changed": 1, "kept": 1}
    assert summary["agreement"]["matching|cc"]["n"] == 2 and summary["agreement"]["matching|cc"]["kappa"] == -1.0
