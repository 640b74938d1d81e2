"""Stage `report_index`: the study index, one row per (model, dataset) report folder.

Each row is read back from the folder's summary.json (written by stage `report`): model and
dataset, where the fine-tuned variant comes from (its kind), accuracy before and after fine-tuning,
both variants' LM loss and the mean KL between their predictions, last-layer similarity, SAE count, the share of
pretrained features the fine-tuned SAE keeps, the best probe, and links to the folder's pages
(relative, so the reports folder can be copied away as a whole).
"""

from __future__ import annotations

from pathlib import Path

from workflow import layout
from workflow.report import study_index
from workflow.report.render import render
from workflow.runner import cli
from workflow.store.files import read_json, write_text


def run(pages: list[str], out: str, notes: list[str] | None = None) -> list[dict]:
    """Write the index page `out` of the report folders `pages` (and `notes`: the pairs the study
    leaves out, with why); returns their summaries."""
    summaries = [(folder, read_json(Path(folder) / layout.REPORT.names["summary"])) for folder in pages]
    table = study_index.index(summaries, str(Path(out).parent))
    warnings = [f"{s['model']} / {s['dataset']}: {w}" for _, s in summaries for w in s.get("warnings") or []]
    write_text(render("index.html.j2", title="study index", index=table, notes=notes or [], warnings=warnings), out)
    return [s for _, s in summaries]


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--pages", nargs="+", required=True, help="report folders (each with its summary.json)")
    parser.add_argument("--out", required=True, help="the index page")
    parser.add_argument("--not-studied", nargs="*", default=[], help="pairs left out of the study, with why")
    args = parser.parse_args(argv)
    run(args.pages, args.out, args.not_studied)
