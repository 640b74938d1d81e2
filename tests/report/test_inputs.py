"""`workflow.report.inputs`: the report's files read back, keyed the way the page builders look them up."""

from __future__ import annotations

import polars as pl

from workflow import layout
from workflow.report.inputs import read_diffs, read_inputs
from workflow.store.files import write_json, write_parquet

SIMILARITY = pl.DataFrame({"layer": [0, 1], "cka_debiased": [1.0, 0.5]})


def _diff(root, site, layer, sae, methods=None, truth=None):
    """A diff folder (diff.json naming its place, both tables) with a methods or truth folder inside."""
    folder = root / f"{site}-L{layer}-{sae}"
    folder.mkdir(parents=True)
    write_json({"sae": sae, "site": site, "layer": layer}, folder / layout.DIFF.names["summary"])
    write_parquet(pl.DataFrame({"feature": [0, 1]}), folder / layout.DIFF.names["table"])
    write_parquet(pl.DataFrame({"feature": [1]}), folder / layout.DIFF.names["changed"])
    for sub, names, content in (("methods", layout.METHODS.names, methods), ("truth", layout.TRUTH.names, truth)):
        if content is not None:
            (folder / sub).mkdir()
            write_json(content, folder / sub / names["summary"])
    return folder


def _crosscoder(root, name, site, layer):
    folder = root / name
    folder.mkdir(parents=True)
    summary = {"crosscoder": name, "site": site, "layer": layer, "d_sae": 8, "l0": 2.0, "dead_fraction": 0.0}
    write_json({**summary, "fvu": {"pretrained": 0.1, "finetuned": 0.2}}, folder / layout.CROSSCODER.names["summary"])
    write_json({"label_names": ["a"], "concepts": []}, folder / layout.CROSSCODER.names["features_summary"])
    return folder


def test_a_page_with_only_its_required_inputs_reads_the_rest_as_absent(tmp_path):
    write_json({"label_names": ["a", "b"]}, tmp_path / "meta.json")
    write_parquet(SIMILARITY, tmp_path / "similarity.parquet")
    write_json({"n_tokens": 5}, tmp_path / "extract.json")
    inputs = read_inputs(
        {
            "meta": tmp_path / "meta.json",
            "similarity": tmp_path / "similarity.parquet",
            "extracts": [tmp_path / "extract.json"],
        }
    )
    assert inputs["meta"] == {"label_names": ["a", "b"]}
    assert inputs["similarity"].equals(SIMILARITY)
    assert inputs["extracts"] == [(tmp_path / "extract.json", {"n_tokens": 5})]
    for absent in ("metrics", "lm", "probes", "kmeans", "heads", "emergence"):
        assert inputs[absent] is None, absent
    for empty in ("truncation", "frozen", "methods", "crosscoders", "truth"):
        assert inputs[empty] == {}, empty
    assert inputs["saes"] == inputs["diffs"] == inputs["crosscoder_sides"] == []


def test_methods_and_truth_are_keyed_by_their_diffs_place_and_crosscoders_grouped_by_site_and_layer(tmp_path):
    a = _diff(tmp_path, "resid_post", 1, "relu", methods={"auroc": 0.9}, truth={"f1": 0.5})
    b = _diff(tmp_path, "mlp_out", 2, "topk", methods={"auroc": 0.7})
    cross = [_crosscoder(tmp_path / "cc", n, "resid_post", 1) for n in ("x", "y")]
    cross.append(_crosscoder(tmp_path / "cc", "z", "mlp_out", 2))
    write_json({"label_names": []}, tmp_path / "meta.json")
    write_parquet(SIMILARITY, tmp_path / "similarity.parquet")
    write_json({"finetuned": {"accuracy": 0.9}}, tmp_path / "metrics.json")
    write_json({"accuracy": 0.7}, tmp_path / "frozen.json")
    write_json({"cut_share": 0.1}, tmp_path / "train.json")
    paths = {
        "meta": tmp_path / "meta.json",
        "similarity": tmp_path / "similarity.parquet",
        "metrics": tmp_path / "metrics.json",
        "frozen": {"pretrained": tmp_path / "frozen.json"},
        "truncation": [str(tmp_path / "train.json")],
        "diffs": [str(a), str(b)],
        "methods": [str(a / "methods"), str(b / "methods")],
        "truth": [str(a / "truth")],
        "crosscoders": [str(c) for c in cross],
    }
    inputs = read_inputs(paths)
    assert inputs["metrics"] == {"finetuned": {"accuracy": 0.9}}
    assert inputs["frozen"] == {"pretrained": {"accuracy": 0.7}}
    assert inputs["truncation"] == {"train": {"cut_share": 0.1}}  # by split, the file's stem
    assert inputs["methods"] == {("relu", "resid_post", 1): {"auroc": 0.9}, ("topk", "mlp_out", 2): {"auroc": 0.7}}
    assert inputs["truth"] == {("relu", "resid_post", 1): {"f1": 0.5}}
    assert {k: [s["crosscoder"] for s in v] for k, v in inputs["crosscoders"].items()} == {
        ("resid_post", 1): ["x", "y"],
        ("mlp_out", 2): ["z"],
    }
    sides = [(s["variant"], s["partner_key"]) for s in inputs["crosscoder_sides"]]
    assert len(sides) == 6 and sides[:2] == [
        ("pretrained", "finetuned-resid_post-L1-crosscoder.x"),
        ("finetuned", "pretrained-resid_post-L1-crosscoder.x"),
    ]
    (first, second) = inputs["diffs"]
    assert first["summary"] == {"sae": "relu", "site": "resid_post", "layer": 1}
    assert first["table"]["feature"].to_list() == [0, 1] and second["changed"]["feature"].to_list() == [1]


def test_read_diffs_keeps_the_order_it_was_given(tmp_path):
    folders = [_diff(tmp_path, "resid_post", layer, "relu") for layer in (3, 1, 2)]
    assert [d["summary"]["layer"] for d in read_diffs([str(f) for f in folders])] == [3, 1, 2]
