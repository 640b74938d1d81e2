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
module reads the inputs (`workflow.report.inputs`), has the pages assembled
(`workflow.report.page`: section builders, plots, templates) and writes the folder.
"""

from __future__ import annotations

import json
import logging

from workflow import layout
from workflow.report.inputs import read_inputs
from workflow.report.page import PAGES, ReportFolder, page_sections, summary_json, write_feature_pages
from workflow.report.render import rel
from workflow.runner import cli
from workflow.store.files import atomic_dir, write_json

log = logging.getLogger(__name__)


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
