"""Stage `ground_truth`: each diffing method's answer per root, scored against the declared change."""

from __future__ import annotations

import polars as pl

from tests.analysis.test_truth import TRUTH, _diff, _features
from workflow.analysis.truth import answers
from workflow.stages import ground_truth as gt
from workflow.store.files import read_json, write_json


def test_a_crosscoders_latents_carry_their_category_and_their_concept_f1(tmp_path):
    pl.DataFrame({"latent": [0, 1, 2], "category": ["kept", "new", "dead"]}).write_parquet(tmp_path / "latents.parquet")
    pl.DataFrame({"feature": [2, 0, 1], "frequency": [0.0, 0.1, 0.2], "f1:root_0": [0.0, 0.9, 0.2]}).write_parquet(
        tmp_path / "features.parquet"
    )
    latents = gt.crosscoder_latents(str(tmp_path)).sort("latent")
    assert latents["f1:root_0"].to_list() == [0.9, 0.2, 0.0] and "frequency" not in latents.columns
    rows = answers({"root_0": "retained"}, _diff(["retained"], ["retained"]), {
        "pretrained": _features(1, {"root_0": (0, 0.9)}), "finetuned": _features(1, {})
    }, None, {"cc": latents}, min_f1=0.5)  # fmt: skip
    assert [(r["method"], r["unit"], r["predicted"]) for r in rows] == [("matching", 0, "kept"), ("cc", 0, "kept")]


def test_the_stage_scores_each_method_from_its_folders(tmp_path):
    for name in ("diff", "pre", "ft", "sw", "cc"):
        (tmp_path / name).mkdir()
    write_json({"generator": {"truth": TRUTH}}, tmp_path / "meta.json")
    diff = _diff(["retained", "retained", "overwritten", "dead"], ["retained", "retained", "new", "new"])
    diff.write_parquet(tmp_path / "diff/diff.parquet")
    _features(4, {"root_0": (0, 0.9), "root_1": (1, 0.8), "root_2": (2, 0.7)}).write_parquet(
        tmp_path / "pre/features.parquet"
    )
    _features(4, {"root_3": (3, 0.95)}).write_parquet(tmp_path / "ft/features.parquet")
    stagewise = pl.DataFrame({"feature": [0, 1, 2, 3], "category_pretrained": ["kept", "changed", "kept", "dead"]})
    stagewise.write_parquet(tmp_path / "sw/movement.parquet")
    pl.DataFrame({"latent": [0, 1], "category": ["kept", "removed"]}).write_parquet(tmp_path / "cc/latents.parquet")
    f1 = {"f1:root_0": [0.1, 0.9], "f1:root_1": [0.6, 0.2], "f1:root_2": [0.3, 0.1], "f1:root_3": [0.7, 0.8]}
    pl.DataFrame({"feature": [1, 0], **f1}).write_parquet(tmp_path / "cc/features.parquet")
    folders = {"--diff": "diff", "--sae-pretrained": "pre", "--sae-finetuned": "ft", "--stagewise": "sw"}
    argv = ["--meta", str(tmp_path / "meta.json"), "--crosscoders", f"cc={tmp_path / 'cc'}", "--min-f1", "0.75"]
    argv += [a for flag, name in folders.items() for a in (flag, str(tmp_path / name))]
    gt.main([*argv, "--out", str(tmp_path / "out")])
    table = pl.read_parquet(tmp_path / "out/truth.parquet")
    cc = table.filter(pl.col("method") == "cc")
    # latent 0 carries root_0 (F1 0.9, kept) and root_3 (0.8, kept: wrong); roots 1 and 2 fall below 0.75
    assert cc.select("root", "unit", "predicted").rows() == [
        ("root_0", 0, "kept"), ("root_1", 1, "unfound"), ("root_2", 1, "unfound"), ("root_3", 0, "kept")
    ]  # fmt: skip
    summary = read_json(tmp_path / "out/truth.json")
    assert summary["min_f1"] == 0.75 and summary["truth"] == TRUTH
    assert summary["scores"]["cc"]["accuracy"] == 0.25 and summary["scores"]["matching"]["accuracy"] == 0.5
