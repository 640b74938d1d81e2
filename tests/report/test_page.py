"""`workflow.report.page`: the report folder's plots and pages, and the numbers summary.json hands the index."""

from __future__ import annotations

import polars as pl

from workflow import layout
from workflow.report.page import IMAGES, PAGES, ReportFolder, _diff_images, summary_json
from workflow.report.render import Image

SIMILARITY = pl.DataFrame({"layer": [1, 0], "cka_debiased": [0.25, 1.0], "mean_cosine": [0.5, 1.0]})


def test_a_plot_is_copied_into_img_and_a_missing_one_is_not_shown(tmp_path):
    (tmp_path / "plot.png").write_bytes(b"\x89PNG-bytes")
    folder = ReportFolder(tmp_path / "report")
    assert folder.image(tmp_path / "plot.png", "a.png", "a plot") == Image(f"{IMAGES}/a.png", "a plot")
    assert (tmp_path / "report" / IMAGES / "a.png").read_bytes() == b"\x89PNG-bytes"
    assert folder.image(tmp_path / "none.png", "b.png", "missing") is None
    assert not (tmp_path / "report" / IMAGES / "b.png").exists()


def test_each_recipes_diff_plots_are_named_by_recipe_and_file(tmp_path):
    summary = tmp_path / "relu"
    summary.mkdir()
    names = layout.DIFF_SUMMARY.names
    (summary / names["transfer_plot"]).write_bytes(b"png")
    images = _diff_images(ReportFolder(tmp_path / "report"), {"relu": str(summary)})
    categories, transfer, cosine = images["relu"]
    assert categories is None and cosine is None  # not made: not shown
    assert transfer.src == f"img/diff-relu-{names['transfer_plot']}"


def test_summary_json_holds_the_index_numbers_and_the_pages_the_folder_has():
    counts = {"retained": 3, "drifted": 1, "dead": 2, "lost": 4}
    inputs = {
        "saes": [{"recipe": "relu"}],
        "metrics": {"pretrained": {"accuracy": 0.5}, "finetuned": {"accuracy": 0.875}},
        "frozen": {},
        "similarity": SIMILARITY,
        "diffs": [{"summary": {"categories": {"pretrained": {"counts": counts}}}}],
        "probes": {
            "probes": pl.DataFrame({"variant": ["finetuned", "finetuned", "pretrained"], "accuracy": [0.6, 0.8, 0.9]})
        },
        "lm": None,
    }
    context = {
        "variant": {"kind": "checkpoint", "source": "ckpt-7"},
        "warnings": ["a warning"],
        "similarity": {"image": Image("img/similarity.png", "similarity by layer")},
    }
    out = summary_json("m", "d", inputs, context)
    assert out["variant"] == "checkpoint ckpt-7" and out["n_saes"] == 1 and out["warnings"] == ["a warning"]
    # checkpoint variants take their accuracy from the frozen classifiers (none here)
    assert out["accuracy_pretrained"] is None and out["accuracy_finetuned"] is None
    assert out["last_layer_cka"] == 0.25 and out["last_layer_mean_cosine"] == 0.5  # the deepest layer
    assert out["retained_fraction"] == 4 / 8  # retained + drifted of the live (not dead) features
    assert out["best_probe"] == 0.8  # the fine-tuned variant's best
    assert out["pages"] == {
        "report": PAGES["page"],
        "features": PAGES["features"],
        "sentences": PAGES["sentences"],
        "similarity_plot": "img/similarity.png",
    }
    context["variant"] = {"kind": "classify"}
    bare = summary_json("m", "d", {**inputs, "saes": []}, {**context, "similarity": {"image": None}})
    assert bare["variant"] == "classify" and (bare["accuracy_pretrained"], bare["accuracy_finetuned"]) == (0.5, 0.875)
    assert bare["pages"] == {"report": "index.html", "features": None, "sentences": None, "similarity_plot": None}
