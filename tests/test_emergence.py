"""Stage `emergence`: probes with control-task selectivity, CKA to the final model and SAE alignment,
over the snapshots of a model trained from scratch (the maths on planted values: tests/analysis/
test_emergence.py and test_alignment.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import polars as pl
import pytest
import torch

from tests.conftest import ROOT

# what makes the tiny board learnable in about a minute: no dropout, a high lr, small batches, 40% masked
LEARNS = {"epochs": 25, "batch_size": 32, "lr": 5e-3, "mask_fraction": 0.4, "snapshots": 6}
# the helpers' tiny board with 6 object tokens: with 3, roots of 2x2 cells are too alike to tell apart

EMERGENCE = {"max_train_docs": 300, "max_test_docs": 120, "token_max_tokens": 3000, "C": 1.0, "batch_size": 64}
EMERGENCE |= {"seed": 0}


@pytest.fixture(scope="module")
def learnt(tmp_path_factory):
    """A tiny scratch BERT trained until it has learnt the roots (about a minute on 2 cores), and a
    TopK SAE on its final layer (the train_sae stage's trainer on an activation set of its boards)."""
    from tests.scratch_helpers import trained
    from workflow.sae import recipe_from_dict
    from workflow.sae.training import train
    from workflow.stages import emergence
    from workflow.store.activations import ActivationWriter
    from workflow.store.files import atomic_dir, read_json

    root = tmp_path_factory.mktemp("emergence")
    from tests.scratch_helpers import BOARD

    run = trained(root, cfg=LEARNS, n_train=3000, dropout=0.0, board={**BOARD, "vocab_token": 6})
    concepts = read_json(run["data"] / "meta.json")["concepts"]
    sample = emergence.sample(str(run["tokens"]["train"]), 1500, 10, concepts, 0)
    acts = emergence.activations(str(run["trained"] / "final"), sample, [("resid_post", 2)], 64, torch.device("cpu"))
    with atomic_dir(root / "acts") as tmp:
        writer = ActivationWriter(tmp, 32, "float32", 1 << 20, {"model": "net", "variant": "pretrained"})
        writer.append(acts[("resid_post", 2)][sample.ordinary])
        writer.close()
    recipe = {"architecture": "topk", "d_sae": 32, "k": 4, "lr": 5e-3, "train_tokens": 200_000, "batch_size": 256}
    train(str(root / "acts"), recipe_from_dict(recipe), str(root / "sae"), {"model_name": "net"}, torch.device("cpu"))
    targets = [("resid_post", 1), ("resid_post", 2)]
    tokens = run["tokens"]
    result = emergence.run(
        str(run["init"]), str(run["trained"]), str(tokens["train"]), str(tokens["test"]),
        str(run["data"] / "meta.json"), targets, {"topk:resid_post:2": str(root / "sae")}, EMERGENCE, str(root / "em"),
    )  # fmt: skip
    return {**run, "result": result, "out": root / "em"}


def test_the_roots_form_over_training_and_probes_read_them_at_the_end(learnt):
    result, out = learnt["result"], learnt["out"]
    assert len(result["snapshots"]) >= 6 and result["snapshots"][0] == 0
    assert result["corpus"] == "boards" and result["n_roots"] == 5
    roots = {r["factor"]: r for r in result["roots"]}
    decoded = [r["best_balanced_accuracy"] for r in roots.values()]
    assert min(decoded) >= 0.85 and np.mean(decoded) >= 0.93, roots  # measured: 0.90, 0.96, 0.97, 0.99, 0.97
    table = pl.read_parquet(out / "emergence.parquet")
    step0 = table.filter(
        (pl.col("step") == 0) & pl.col("factor").str.starts_with("root_") & (pl.col("level") == "token")
    )
    final = table.filter((pl.col("step") == result["final_step"]) & pl.col("factor").str.starts_with("root_"))
    # the untrained model reads roots only as far as its random mixing of neighbours allows; training adds to it
    assert final.filter(pl.col("level") == "token")["selectivity"].mean() > step0["selectivity"].mean() + 0.1
    # most roots reach 0.95 at some snapshot, none before training
    formed = [r["formed_at"] for r in roots.values() if r["formed_at"] is not None]
    assert len(formed) >= 4 and min(formed) > 0, roots
    cka = pl.read_parquet(out / "cka.parquet")
    last = cka.filter(pl.col("step") == result["final_step"])["cka_biased"]
    assert np.allclose(last.to_numpy(), 1.0, atol=1e-6)  # the final model against itself
    assert (out / "emergence.png").stat().st_size > 10_000


def test_the_sae_alignment_scores_each_root_against_the_final_models_sae(learnt):
    sae = pl.read_parquet(learnt["out"] / "sae_alignment.parquet")
    roots = sae.filter(pl.col("factor").str.starts_with("root_"))
    assert len(roots) == 5 and roots["latent"].min() >= 0
    assert ((roots["f1"] > 0) & (roots["f1"] <= 1)).all() and roots["precision"].is_between(0, 1).all()
    # a threshold of 0 is among those tried: the best threshold's F1 is never below the ">0" one
    assert (roots["threshold_f1"] >= roots["f1"] - 1e-12).all() and (roots["threshold_f1"] <= 1).all()
    topk = learnt["result"]["sae_roots"]["topk"]
    assert topk["min_threshold_f1"] >= topk["min_best_f1"] and topk["roots_threshold_f1_08"] >= topk["roots_f1_08"]
    (mcc,) = learnt["result"]["sae"]
    assert 0 < mcc["mcc"] <= 1 and mcc["d_sae"] == 32
    # one linear unit bounds what one latent can do on the same tokens, and reads the roots well
    detectors = learnt["result"]["detector_f1"]
    units = [detectors[f"root_{r}"]["f1"] for r in range(5)]
    assert np.mean(units) > 0.7 and np.mean(units) > roots["f1"].mean(), (units, roots["f1"].to_list())


def _board_saes():
    spec = importlib.util.spec_from_file_location("board_saes", ROOT / "benchmarks" / "board_saes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweeps_variance_shares_on_planted_values():
    bench = _board_saes()
    rng = np.random.default_rng(0)
    # activations = a token part + a root part: each explains a share, both added explain all
    token, root = rng.integers(0, 5, 3000) + 7, rng.integers(-1, 4, 3000)
    x = rng.normal(size=(5, 16))[token - 7] + rng.normal(size=(5, 16))[root + 1]
    shares = bench.variance_shares(x, {"token": token, "root": root, "both": token * 1000 + root})
    assert 0.2 < shares["token"] < 0.8 and 0.2 < shares["root"] < 0.8
    assert shares["both"] > 0.99 and bench.additive_share(x, token, root) > 0.99
