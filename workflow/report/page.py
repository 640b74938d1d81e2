"""The report folder's pages: the plots it copies, each section's template context and summary.json.

`page_sections` turns the parsed inputs (`workflow.report.inputs`) into the report page's template
context through the section builders (`workflow.report.sections` and its topic siblings), copying
each plot it shows into the folder's img/; `write_feature_pages` writes feature.html, sentences.html
and their data files; `summary_json` is what the study index reads of the folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from workflow import layout
from workflow.report import feature_data, methods_sections, probe_sections, scratch_sections, sections, study_index
from workflow.report.render import Image, render

PAGES = layout.REPORT.names
IMAGES = "img"


class ReportFolder:
    """The report folder being written (a temporary folder, renamed into place when complete):
    plots are copied into its img/, pages written at its top."""

    def __init__(self, root: Path):
        self.root = root
        (root / IMAGES).mkdir(parents=True, exist_ok=True)

    def image(self, source: str | Path, name: str, alt: str) -> Image | None:
        """Copy a plot into img/ under `name`; None where the plot is missing (nothing to show)."""
        if not Path(source).is_file():
            return None
        shutil.copyfile(source, self.root / IMAGES / name)
        return Image(f"{IMAGES}/{name}", alt)

    def page(self, name: str, template: str, **context) -> None:
        (self.root / PAGES[name]).write_text(render(template, pages=PAGES, **context), encoding="utf-8")


def _emergence_section(folder: ReportFolder, inputs: dict, paths: dict) -> dict | None:
    if inputs["emergence"] is None:
        return None
    plot = Path(paths["emergence"]) / layout.EMERGENCE.names["plot"]
    image = folder.image(plot, "emergence.png", "probe selectivity and CKA over training")
    return scratch_sections.emergence(inputs["emergence"]["summary"], inputs["emergence"]["sae"], image)


DIFF_PLOTS = {
    "categories_plot": "feature categories by layer",
    "transfer_plot": "SAE transfer by layer",
    "cosine_plot": "matched decoder cosines",
}


def _diff_images(folder: ReportFolder, summaries: dict[str, str]) -> dict[str, list]:
    """Each recipe's diff summary plots (recipe names are path-safe: the config schema checks them)."""
    names = layout.DIFF_SUMMARY.names
    return {
        recipe: [folder.image(Path(d) / names[n], f"diff-{recipe}-{names[n]}", alt) for n, alt in DIFF_PLOTS.items()]
        for recipe, d in summaries.items()
    }


def _probe_sections(folder: ReportFolder, inputs: dict, paths: dict) -> dict:
    if inputs["probes"] is None:
        return {"probes": None, "kmeans": None}
    names, probe_dir = layout.PROBE_SUMMARY.names, Path(paths["probe_summary"])
    images = {
        "accuracy": folder.image(probe_dir / names["accuracy_plot"], names["accuracy_plot"], "probe accuracy by layer"),
        "sparse": folder.image(probe_dir / names["sparse_plot"], names["sparse_plot"], "k-sparse probe accuracy"),
    }
    out = {"probes": probe_sections.probes(inputs["probes"], inputs["saes"], images), "kmeans": None}
    if inputs["kmeans"] is not None:
        plot = layout.KMEANS.names["plot"]
        image = folder.image(Path(paths["kmeans"]) / plot, f"kmeans-{plot}", "k-means clusters")
        out["kmeans"] = probe_sections.kmeans(
            inputs["kmeans"]["scores"], inputs["kmeans"]["clusters"], inputs["saes"], image
        )
    return out


def _heads_section(folder: ReportFolder, change: pl.DataFrame | None, heads_dir: str | None) -> dict | None:
    if change is None:
        return None
    names = layout.HEADS_SUMMARY.names
    shutil.copyfile(Path(heads_dir) / names["viewer"], folder.root / PAGES["heads"])
    images = {
        "ablation": folder.image(
            Path(heads_dir) / names["ablation_plot"], f"heads-{names['ablation_plot']}", "head ablation effects"
        ),
        "change": folder.image(
            Path(heads_dir) / names["change_plot"], f"heads-{names['change_plot']}", "attention pattern change"
        ),
    }
    return sections.heads(change, images)


def page_sections(folder: ReportFolder, inputs: dict, paths: dict, page_dir: str) -> dict:
    """The report page's template context: one entry per section (None: not shown)."""
    saes = inputs["saes"]
    plot = layout.SIMILARITY.names["plot"]
    lm_plot = layout.LM_COMPARE.names["plot"]
    lm_image = (
        folder.image(Path(paths["lm_compare"]) / lm_plot, f"lm-{lm_plot}", "per-token KL") if inputs["lm"] else None
    )
    truncation = sections.truncation(inputs["truncation"], paths.get("truncation_warning", 0.2))
    return {
        "variant": sections.variant(paths["kind"], inputs["metrics"], paths.get("variant_source")),
        "accuracy": sections.accuracy(inputs["metrics"], inputs["meta"], inputs["frozen"], paths["kind"]),
        "warnings": sections.task_warnings(inputs["metrics"], inputs["meta"], inputs["frozen"], paths["kind"])
        + truncation["warnings"],
        "truncation": truncation["section"],
        "lm": sections.lm(inputs["lm"], lm_image),
        "skipped": paths.get("skipped") or [],
        "similarity": sections.similarity(
            inputs["similarity"], folder.image(paths["plot"], plot, "similarity by layer")
        ),
        "saes": sections.saes(saes, page_dir),
        "concepts": sections.concepts(saes),
        "diff": sections.diff(inputs["diffs"], _diff_images(folder, paths.get("diff_summaries") or {}), saes),
        "methods": methods_sections.methods(inputs["diffs"], inputs["methods"], inputs["crosscoders"]),
        **_probe_sections(folder, inputs, paths),
        "heads": _heads_section(folder, inputs["heads"], paths.get("heads_summary")),
        "emergence": _emergence_section(folder, inputs, paths),
        "truth": scratch_sections.truth(inputs["truth"]),
        "files": sections.files(paths, inputs["extracts"], page_dir),
    }


def write_feature_pages(folder: ReportFolder, inputs: dict, heading: str) -> None:
    """feature.html (the SAEs' features and the crosscoders' latents, on both sides), sentences.html
    (the SAEs') and their data files."""
    saes, sides = inputs["saes"], inputs["crosscoder_sides"]
    diffs = {(d["summary"]["sae"], d["summary"]["site"], d["summary"]["layer"]): d["table"] for d in inputs["diffs"]}
    feature_data.write_feature_data(saes + sides, diffs, folder.root)
    feature_data.write_sentence_data(saes, folder.root)
    folder.page(
        "features",
        "feature.html.j2",
        title=f"{heading}: features",
        heading=heading,
        data={"saes": feature_data.catalogue(saes + sides), "chunk": feature_data.CHUNK},
    )
    listed = feature_data.catalogue(saes)
    folder.page("sentences", "sentences.html.j2", title=f"{heading}: sentences", heading=heading, data={"saes": listed})


def summary_json(model: str, dataset: str, inputs: dict, context: dict) -> dict:
    """What the study index reads of this folder: its numbers, and which pages and plot it has."""
    has_features, plot = bool(inputs["saes"]), context["similarity"]["image"]
    numbers = study_index.study_numbers(
        sections.task_accuracy(inputs["metrics"], inputs["frozen"], context["variant"]["kind"]),
        inputs["similarity"],
        [d["summary"] for d in inputs["diffs"]],
        inputs["probes"]["probes"] if inputs["probes"] else None,
        inputs["lm"],
    )
    pages = {
        "report": PAGES["page"],
        "features": PAGES["features"] if has_features else None,
        "sentences": PAGES["sentences"] if has_features else None,
        "similarity_plot": plot.src if plot else None,
    }
    kind = context["variant"]["kind"]
    return {
        "model": model,
        "dataset": dataset,
        "variant": kind if kind != "checkpoint" else f"checkpoint {context['variant']['source']}",
        "n_saes": len(inputs["saes"]),
        "warnings": context["warnings"],
        **numbers,
        "pages": pages,
    }
