"""Stage `report`: the offline HTML report folder of one (model, dataset).

``results/reports/<model>/<dataset>/`` holds

- ``index.html``: what the fine-tuned variant is, accuracy before and after fine-tuning (labelled
  data), both variants' LM loss and where their predictions disagree (per-token KL), per-layer similarity, the SAE
  quality table, planted concepts, the feature diff (categories by layer, transfer, the
  most changed features), probes and k-means, attention heads, links to the results;
- ``feature.html`` and ``sentences.html`` with their lazily loaded ``data/``
  (`workflow.report.feature_data`), where an SAE recipe covers the dataset (the feature pages
  also show each crosscoder latent on both variants);
- ``heads.html`` (the heads summary's interactive attention patterns) and ``img/`` (the
  analysis plots);
- ``summary.json``: the numbers the study index shows (stage `report_index`).

Everything a page shows is in the folder: nothing is fetched from the network, pages work
from ``file://``, and the folder can be copied away from the results it was made from. This
module only reads the inputs, calls the section builders (`workflow.report.sections`),
copies the plots and renders the templates (`workflow.report.render`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import polars as pl

from workflow import layout
from workflow.report import feature_data, methods_sections, probe_sections, scratch_sections, sections, study_index
from workflow.report.render import Image, rel, render
from workflow.runner import cli
from workflow.store.files import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

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


def read_diffs(diff_dirs: list[str]) -> list[dict]:
    """Each diff folder's diff.json, its per-feature table and its most changed features."""
    names = layout.DIFF.names
    return [
        {
            "summary": read_json(Path(d) / names["summary"]),
            "table": pl.read_parquet(Path(d) / names["table"]),
            "changed": pl.read_parquet(Path(d) / names["changed"]),
        }
        for d in diff_dirs
    ]


def _tables(folder: str | None, where, names: tuple[str, ...]) -> dict[str, pl.DataFrame] | None:
    """Some tables of a layout folder (`where`: its `Folder`), or None where the page has no such folder."""
    if not folder:
        return None
    return {name: pl.read_parquet(Path(folder) / where.names[name]) for name in names}


def _keyed(folders: list[str], name: str, keys: tuple[str, ...]) -> dict:
    """Each folder's JSON file `name`, by the folder's (sae, site, layer) from its diff.json beside it."""
    out = {}
    for folder in folders:
        diff = read_json(Path(folder).parent / layout.DIFF.names["summary"])
        out[tuple(diff[k] for k in keys)] = read_json(Path(folder) / name)
    return out


def _crosscoders(folders: list[str]) -> dict:
    """crosscoder.json of each crosscoder folder, grouped by (site, layer)."""
    out: dict = {}
    for folder in folders:
        summary = read_json(Path(folder) / layout.CROSSCODER.names["summary"])
        out.setdefault((summary["site"], summary["layer"]), []).append(summary)
    return out


def read_inputs(paths: dict) -> dict:
    """Everything the page shows, parsed (the folders and files of `paths`: see `main`)."""
    heads = _tables(paths.get("heads_summary"), layout.HEADS_SUMMARY, ("changes",))
    return {
        "meta": read_json(paths["meta"]),
        "truncation": {Path(f).stem: read_json(f) for f in paths.get("truncation") or []},
        "metrics": read_json(paths["metrics"]) if paths.get("metrics") else None,
        "frozen": {v: read_json(f) for v, f in (paths.get("frozen") or {}).items()},
        "lm": read_json(Path(paths["lm_compare"]) / layout.LM_COMPARE.names["summary"])
        if paths.get("lm_compare")
        else None,
        "similarity": pl.read_parquet(paths["similarity"]),
        "extracts": [(p, read_json(p)) for p in paths.get("extracts") or []],
        "saes": feature_data.describe_saes(paths.get("saes") or []),
        "diffs": read_diffs(paths.get("diffs") or []),
        "methods": _keyed(paths.get("methods") or [], layout.METHODS.names["summary"], ("sae", "site", "layer")),
        "crosscoders": _crosscoders(paths.get("crosscoders") or []),
        "crosscoder_sides": feature_data.describe_crosscoders(paths.get("crosscoders") or []),
        "probes": _tables(paths.get("probe_summary"), layout.PROBE_SUMMARY, ("probes", "sparse", "ranked", "tokens")),
        "kmeans": _tables(paths.get("kmeans"), layout.KMEANS, ("scores", "clusters")),
        "heads": heads["changes"] if heads else None,
        "emergence": _emergence(paths.get("emergence")),
        "truth": _keyed(paths.get("truth") or [], layout.TRUTH.names["summary"], ("sae", "site", "layer")),
    }


def _emergence(folder: str | None) -> dict | None:
    """A scratch model's emergence summary and SAE alignment table (on its corpus), or None."""
    if not folder:
        return None
    names = layout.EMERGENCE.names
    return {"summary": read_json(Path(folder) / names["summary"]), "sae": pl.read_parquet(Path(folder) / names["sae"])}


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


def run(model: str, dataset: str, paths: dict, out_dir: str) -> dict:
    """Write the report folder of one (model, dataset); `paths` names its inputs (see `main`).
    Returns what summary.json holds."""
    inputs = read_inputs(paths)
    heading = f"{model} fine-tuned on {dataset}"
    with atomic_dir(out_dir) as tmp:
        folder = ReportFolder(tmp)
        if inputs["saes"]:
            write_feature_pages(folder, inputs, heading)
        context = page_sections(folder, inputs, paths, out_dir)
        index_href = rel(layout.REPORT_INDEX.file("page"), layout.REPORT.path(model=model, dataset=dataset))
        folder.page(
            "page",
            "report.html.j2",
            title=f"{model} / {dataset}",
            heading=heading,
            index_href=index_href,
            has_features=bool(inputs["saes"]),
            **context,
        )
        summary = summary_json(model, dataset, inputs, context)
        write_json(summary, tmp / PAGES["summary"])
    for warning in summary["warnings"]:
        log.warning("%s/%s: %s", model, dataset, warning)
    log.info("%s: report of %d SAEs, %d diffs", out_dir, len(inputs["saes"]), len(inputs["diffs"]))
    return summary


INPUTS = (
    "meta",
    "truncation",
    "truncation_warning",
    "metrics",
    "lm_compare",
    "kind",
    "variant_source",
    "similarity",
    "plot",
    "extracts",
    "saes",
    "diffs",
    "methods",
    "crosscoders",
    "probe_summary",
    "kmeans",
    "heads_summary",
    "emergence",
    "truth",
)


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--meta", required=True, help="the dataset's meta.json")
    parser.add_argument("--truncation", nargs="*", default=[], help="<split>.json of each tokens table")
    parser.add_argument(
        "--truncation-warning", type=float, default=0.2, help="share of a split's tokens cut above which to warn"
    )
    parser.add_argument(
        "--metrics", help="metrics.json of the fine-tune, where the workflow made it (before and after)"
    )
    parser.add_argument(
        "--frozen", nargs="*", default=[], help="VARIANT=metrics.json of a variant's body with a fitted classifier"
    )
    parser.add_argument("--lm-compare", help="lm_compare folder (both variants' LM loss and per-token KL)")
    parser.add_argument("--kind", default="classify", help="where the fine-tuned variant comes from")
    parser.add_argument("--variant-source", help="the checkpoint, for kind checkpoint")
    parser.add_argument("--skipped", type=json.loads, default=[], help="analyses left out, with reasons (JSON)")
    parser.add_argument("--similarity", required=True, help="similarity.parquet")
    parser.add_argument("--plot", required=True, help="similarity.png")
    parser.add_argument("--extracts", nargs="+", required=True, help="extract.json of each variant and split")
    parser.add_argument(
        "--saes", nargs="*", default=[], help="SAE folders (eval.json, features.*, examples, sentences)"
    )
    parser.add_argument(
        "--diffs", nargs="*", default=[], help="diff folders (diff.json, diff.parquet, changed.parquet)"
    )
    parser.add_argument("--diff-summaries", nargs="*", default=[], help="RECIPE=diff_summary folder, one per recipe")
    parser.add_argument("--methods", nargs="*", default=[], help="methods folders (methods.json), beside their diffs")
    parser.add_argument("--crosscoders", nargs="*", default=[], help="crosscoder folders (crosscoder.json)")
    parser.add_argument("--probe-summary", help="probe_summary folder")
    parser.add_argument("--kmeans", help="kmeans folder (shown with the probes)")
    parser.add_argument("--heads-summary", help="heads_summary folder")
    parser.add_argument("--emergence", help="a scratch model's emergence folder (on its corpus)")
    parser.add_argument("--truth", nargs="*", default=[], help="ground_truth folders, beside their diffs")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    paths = {k: getattr(args, k) for k in INPUTS}
    paths["diff_summaries"] = cli.pairs(args.diff_summaries)
    paths["frozen"] = cli.pairs(args.frozen)
    paths["skipped"] = args.skipped
    run(args.model, args.dataset, paths, args.out_dir)
