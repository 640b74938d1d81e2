"""Each diffing method's answer per root, read from its best unit, and the scores over roots."""

from __future__ import annotations

import polars as pl

from workflow.analysis import truth as gt

TRUTH = {"root_0": "retained", "root_1": "drifted", "root_2": "overwritten", "root_3": "new"}


def _features(n: int, best: dict[str, tuple[int, float]]) -> pl.DataFrame:
    cols = {"feature": list(range(n))}
    for root in TRUTH:
        f1 = [0.0] * n
        if root in best:
            f1[best[root][0]] = best[root][1]
        cols[f"f1:{root}"] = f1
    return pl.DataFrame(cols)


def _diff(pre: list[str], ft: list[str]) -> pl.DataFrame:
    return pl.concat(
        [
            pl.DataFrame({"side": "pretrained", "feature": list(range(len(pre))), "category": pre}),
            pl.DataFrame({"side": "finetuned", "feature": list(range(len(ft))), "category": ft}),
        ]
    )


def test_each_root_reads_the_category_of_its_best_feature_and_scores_count_roots():
    diff = _diff(["retained", "retained", "overwritten", "dead"], ["retained", "retained", "new", "new"])
    features = {
        # pretrained: root_0 -> feature 0 (retained: right), root_1 -> 1 (retained: wrong), root_2 -> 2 (right)
        "pretrained": _features(4, {"root_0": (0, 0.9), "root_1": (1, 0.8), "root_2": (2, 0.7)}),
        # fine-tuned: the new root_3 -> feature 3 (new: right)
        "finetuned": _features(4, {"root_3": (3, 0.95)}),
    }
    stagewise = pl.DataFrame({"feature": [0, 1, 2, 3], "category_pretrained": ["kept", "changed", "kept", "dead"]})
    latents = pl.DataFrame(
        {"category": ["kept", "removed"], **{f"f1:{r}": [0.9, 0.1] if r != "root_2" else [0.1, 0.3] for r in TRUTH}}
    )
    rows = gt.answers(TRUTH, diff, features, stagewise, {"cc": latents}, min_f1=0.5)
    got = {(r["method"], r["root"]): r["predicted"] for r in rows}
    assert got[("matching", "root_0")] == "kept" and got[("matching", "root_1")] == "kept"
    assert got[("matching", "root_2")] == "removed" and got[("matching", "root_3")] == "new"
    assert got[("stagewise", "root_1")] == "changed" and ("stagewise", "root_3") not in got
    assert got[("cc", "root_2")] == "unfound"  # its best latent has F1 0.3 < 0.5: no unit carries it
    scores = gt.scores(rows)["matching"]["categories"]
    assert scores["kept"] == {"n_true": 1, "n_predicted": 2, "hits": 1, "precision": 0.5, "recall": 1.0, "f1": 2 / 3}
    assert scores["changed"]["recall"] == 0.0 and scores["changed"]["precision"] is None
    assert scores["removed"]["f1"] == 1.0 and scores["new"]["f1"] == 1.0
    assert gt.scores(rows)["stagewise"]["accuracy"] == 2 / 3
