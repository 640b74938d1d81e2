"""The README's markdown tables of a finished study: ``python -m workflow summary [--config F] [--results DIR]``.

Driven by the plan, not by what lies in the results folder: the (model, dataset) pairs, SAEs,
diffs, probes and heads come from `workflow.plan.Plan` of the validated config, their paths from
`workflow.layout` (under `results`), and what each file is about (recipe, site, layer, variant)
from the JSON beside the data. A file the study has not written yet is left out.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow import config, layout
from workflow.layout import VARIANTS
from workflow.plan import Plan
from workflow.report.methods_summary import methods_lines
from workflow.report.render import number
from workflow.report.rows import SAE_COLUMNS, sae_rows
from workflow.report.scratch_summary import emergence_lines, truth_lines
from workflow.runner import cli
from workflow.store.files import nan_to_null, read_json


class Results:
    """The study's files under a results folder other than layout's ``results/`` if need be."""

    def __init__(self, study: dict, results: str = layout.RESULTS):
        self.plan, self.root = Plan(study), Path(results)

    def at(self, path: str) -> Path:
        return self.root / Path(path).relative_to(layout.RESULTS)

    def json(self, path: str) -> dict | None:
        return read_json(self.at(path)) if self.at(path).is_file() else None

    def table(self, path: str) -> pl.DataFrame | None:
        return pl.read_parquet(self.at(path)) if self.at(path).is_file() else None


def summary(study: dict, results: str = layout.RESULTS) -> str:
    """The README's tables (markdown) of a study (a validated config) whose results are in `results`."""
    r = Results(study, results)
    lines = accuracy_lines(r) + similarity_lines(r) + sae_lines(r) + concept_lines(r) + diff_lines(r) + methods_lines(r)
    lines += probe_lines(r) + head_lines(r) + frozen_lines(r) + lm_lines(r) + emergence_lines(r) + truth_lines(r)
    return "\n".join(lines)


def accuracy_lines(r: Results) -> list[str]:
    lines = [
        "| model / dataset | train / test docs | pretrained, fresh classifier | fine-tuned | fine-tuned macro-F1 "
        "| bag-of-words LR | fine-tuning time |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, dataset in r.plan.pairs():
        if r.plan.kind(model) != "classify":
            continue
        m = r.json(f"{r.plan.finetuned_dir(model, dataset)}/{layout.CLASSIFIER_FILES['metrics']}")
        meta = r.json(layout.DATA.file("meta", dataset=dataset))
        if m is None or meta is None:
            continue
        lines.append(
            f"| {model} / {dataset} | {meta['n_train']} / {meta['n_test']} | {m['pretrained']['accuracy']:.3f} "
            f"| {m['finetuned']['accuracy']:.3f} | {m['finetuned']['macro_f1']:.3f} "
            f"| {meta['bow_baseline']['accuracy']:.3f} | {m['train']['seconds']:.0f} s |"
        )
    return lines


def similarity_lines(r: Results) -> list[str]:
    """cos(mean) / token cosine / CKA of every layer, one column per (model, dataset)."""
    sims = {}
    for model, dataset in r.plan.pairs():
        table = r.table(layout.SIMILARITY.file("table", model=model, dataset=dataset))
        if table is not None:
            sims[f"{model} / {dataset}"] = {row["layer"]: row for row in table.sort("layer").iter_rows(named=True)}
    lines = [
        "",
        "Per layer: cos(mean) / token cosine / CKA debiased / CKA biased",
        "",
        "| layer | " + " | ".join(sims) + " |",
        "|---|" + "---|" * len(sims),
    ]
    for layer in sorted({layer for rows in sims.values() for layer in rows}):
        cells = [
            f"{row['mean_cosine']:.3f} / {row['token_cosine']:.3f} / {row['cka_debiased']:.3f} / "
            f"{row['cka_biased']:.3f}"
            if (row := rows.get(layer))
            else ""
            for rows in sims.values()
        ]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    tokens = {name: next(iter(rows.values()))["n_tokens"] for name, rows in sims.items() if rows}
    return [*lines, "", "tokens compared: " + ", ".join(f"{k}: {n}" for k, n in tokens.items())]


def _saes(r: Results, model: str, dataset: str, name: str) -> list[dict]:
    """A JSON file (`name` in layout.SAE.names) of every SAE of (model, dataset) that has it."""
    found = [r.json(f"{d}/{layout.SAE.names[name]}") for d in r.plan.sae_dirs(model, dataset)]
    return [f for f in found if f is not None]


def sae_lines(r: Results) -> list[str]:
    lines = []
    for model, dataset in r.plan.pairs():
        lines += [
            f"| {model} / {dataset} | " + " | ".join(number(v) for v in row) + " |"
            for row in sae_rows(_saes(r, model, dataset, "eval"))
        ]
    if not lines:
        return []
    return [
        "",
        "SAEs (held-out test tokens):",
        "",
        "| model / dataset | " + " | ".join(SAE_COLUMNS) + " |",
        "|---|" + "---|" * len(SAE_COLUMNS),
        *lines,
    ]


def concept_lines(r: Results) -> list[str]:
    """Best single-feature F1 per planted concept, per recipe, layer and variant (features.json)."""
    best, split = {}, {}
    for model, dataset in r.plan.pairs():
        for f in _saes(r, model, dataset, "features_summary"):
            s = f["study"]  # where the SAE belongs: model, variant, dataset, site, layer, sae
            for concept, b in f["best_feature_per_concept"].items():
                key, column = (s["model"], s["dataset"], s["sae"], s["site"], concept), (s["layer"], s["variant"])
                best.setdefault(key, {})[column] = b and b["f1"]
                split.setdefault(key, {})[column] = b and f"{b['precise_features']} / {b['precise_union_recall']:.2f}"
    if not best:
        return []
    columns = sorted({c for cells in best.values() for c in cells}, key=lambda c: (c[0], c[1] != "pretrained"))
    head = "| model / dataset | recipe | site | concept | " + " | ".join(f"L{l} {v[:3]}" for l, v in columns) + " |"
    lines = []
    for title, table in (
        ("Best single-feature F1 per planted concept (features.json; test tokens):", best),
        ("Features with precision >= 0.8 for the concept / recall of their union:", split),
    ):
        lines += ["", title, "", head, "|---|---|---|---|" + "---|" * len(columns)]
        for (model, dataset, recipe, site, concept), cells in table.items():
            lines.append(
                f"| {model} / {dataset} | {recipe} | {site} | {concept} | "
                + " | ".join(number(cells.get(c)) for c in columns)
                + " |"
            )
    return lines


def _diff_line(d: dict) -> str:
    pre, ft = d["categories"]["pretrained"]["fractions"], d["categories"]["finetuned"]["fractions"]
    t = {(x["sae"], x["activations"]): x for x in d["transfer"]}
    pp, ff, pf, fp = (
        t[pair]
        for pair in (
            ("pretrained", "pretrained"),
            ("finetuned", "finetuned"),
            ("pretrained", "finetuned"),
            ("finetuned", "pretrained"),
        )
    )
    return (
        f"| {d['model']} / {d['dataset']} | {d['sae']} | {d['site']} | {d['layer']} | {pre['retained']:.3f} "
        f"| {pre['drifted']:.3f} | {pre['overwritten']:.3f} | {pre['dead']:.3f} | {ft['new']:.3f} "
        f"| {ft['dead']:.3f} | {number(d['matched_cosine_median'])} | {number(d['init_cosine_median']['pretrained'])} "
        f"/ {number(d['init_cosine_median']['finetuned'])} | {number(pp['explained_variance'])} / "
        f"{number(ff['explained_variance'])} | {number(pf['explained_variance'])} / "
        f"{number(fp['explained_variance'])} | {number(ff['task_loss_recovered'])} / "
        f"{number(pf['task_loss_recovered'])} | {number(pp['task_loss_recovered'])} / "
        f"{number(fp['task_loss_recovered'])} |"
    )


def diff_lines(r: Results) -> list[str]:
    """Category fractions and SAE transfer per layer (diff.json)."""
    found = [r.json(f"{d}/{layout.DIFF.names['summary']}") for m, ds in r.plan.pairs() for d in r.plan.diff_dirs(m, ds)]
    found = [d for d in found if d is not None]
    if not found:
        return []
    return [
        "",
        "Feature diff, pretrained vs fine-tuned SAE (fractions of features; diff.json):",
        "",
        "| model / dataset | recipe | site | layer | retained | drifted | overwritten | dead (pre) | new | dead (ft) "
        "| median matched cosine | median cosine to init pre / ft | EV own pre / ft | EV pre SAE on ft / ft SAE on pre "
        "| task loss rec. own ft / pre SAE on ft | own pre / ft SAE on pre |",
        "|---|" + "---|" * 15,
        *(_diff_line(d) for d in found),
    ]


def _pivot_lines(title: str, table: pl.DataFrame, keys: list[str], value) -> list[str]:
    """One markdown row per distinct `keys`, one column per (site, layer, variant) of the table's columns."""
    columns = sorted(
        table.select("layer", "variant", "site").unique().rows(), key=lambda k: (k[2], k[0], k[1] != "pretrained")
    )
    multi_site = len({c[2] for c in columns}) > 1
    names = [f"L{l} {v[:3]}" + (f" {s}" if multi_site else "") for l, v, s in columns]
    lines = [
        "",
        title,
        "",
        "| " + " | ".join(keys) + " | " + " | ".join(names) + " |",
        "|" + "---|" * (len(keys) + len(names)),
    ]
    cells: dict[tuple, dict] = {}
    for row in table.iter_rows(named=True):
        cells.setdefault(tuple(row[k] for k in keys), {})[(row["layer"], row["variant"], row["site"])] = value(row)
    for key, by_column in cells.items():
        lines.append(
            "| " + " | ".join(str(k) for k in key) + " | " + " | ".join(by_column.get(c, "") for c in columns) + " |"
        )
    return lines


def _probe_pair_lines(r: Results, model: str, dataset: str) -> list[str]:
    w, pair = {"model": model, "dataset": dataset}, f"{model} / {dataset}"
    probes = r.table(layout.PROBE_SUMMARY.file("probes", **w))
    if probes is None:
        return []
    lines = _pivot_lines(
        f"{pair}: sequence probes, held-out accuracy / macro-F1 (train fit, test score; "
        f"majority class {probes['chance'].max():.3f}):",
        probes,
        ["representation", "pooling"],
        lambda x: f"{x['accuracy']:.3f} / {x['macro_f1']:.3f}",
    )
    sparse = r.table(layout.PROBE_SUMMARY.file("sparse", **w))
    if sparse is not None and len(sparse):
        lines += _pivot_lines(
            f"{pair}: k-sparse probes, held-out accuracy (top-k features by class separation; "
            f"{sparse['pooling'][0]} pooling):",
            sparse,
            ["representation", "k"],
            lambda x: f"{x['accuracy']:.3f}",
        )
        ranked = r.table(layout.PROBE_SUMMARY.file("ranked", **w))
        ranked = ranked.filter(pl.col("representation").str.starts_with("sae:") & (pl.col("rank") == 0))
        if len(ranked):
            lines += _pivot_lines(
                f"{pair}: the top-ranked SAE feature (id, class, top tokens):",
                ranked,
                ["representation"],
                lambda x: f"{x['feature']} {x['top_class']} ({', '.join((x['top_tokens'] or [])[:3])})",
            )
    tokens = r.table(layout.PROBE_SUMMARY.file("tokens", **w))
    if tokens is not None and len(tokens):
        lines += _pivot_lines(
            f"{pair}: concept token probes, test AUROC / average precision:",
            tokens,
            ["representation", "concept"],
            lambda x: f"{x['auroc']:.3f} / {x['average_precision']:.3f}",
        )
    scores = r.table(layout.KMEANS.file("scores", **w))
    if scores is not None and len(scores):
        lines += _pivot_lines(
            f"{pair}: k-means on test documents ({scores['pooling'][0]} pooling, "
            f"{scores['n_clusters'][0]} clusters), ARI / purity / silhouette:",
            scores,
            ["representation"],
            lambda x: f"{x['ari']:.3f} / {x['purity']:.3f} / {x['silhouette']:.3f}",
        )
    return lines


def probe_lines(r: Results) -> list[str]:
    """Probe accuracy by layer, k-sparse curves, concept probes (probe_summary) and k-means scores."""
    return [line for m, d in r.plan.pairs() if r.plan.probe_scope(m, d) for line in _probe_pair_lines(r, m, d)]


def _signed(x) -> str:
    return "n/a" if x is None else f"{x:+.3f}"


def _ranked_heads_lines(change: pl.DataFrame, modes: list[str], top: int) -> list[str]:
    ranked = {
        v: change.sort(f"task_{modes[0]}_delta_loss_{v}", descending=True, nulls_last=True).head(top) for v in VARIANTS
    }
    lines = []
    for i in range(min(top, len(change))):
        cells = []
        for v, table in ranked.items():
            x = table.row(i, named=True)
            others = ", ".join(f"{m} {_signed(x[f'task_{m}_delta_loss_{v}'])}" for m in modes[1:])
            cells.append(
                f"L{x['layer']}H{x['head']} ({x[f'type_{v}']}) {_signed(x[f'task_{modes[0]}_delta_loss_{v}'])}"
                + (f" ({others})" if others else "")
            )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def head_lines(r: Results, top: int = 5) -> list[str]:
    """The heads whose ablation costs each variant most task loss, and the heads whose attention patterns
    changed most (heads_summary's changes table)."""
    lines = []
    for model, dataset in r.plan.pairs():
        w, pair = {"model": model, "dataset": dataset}, f"{model} / {dataset}"
        change = r.table(layout.HEADS_SUMMARY.file("changes", **w)) if dataset in r.plan.heads_datasets() else None
        if change is None:
            continue
        change = nan_to_null(change)  # polars sorts NaN above every number: a head without a value would lead
        n_docs = read_json(r.at(layout.HEADS.file("summary", variant="finetuned", **w)))["n_docs"]
        modes = [m for m in ("zero", "mean") if f"task_{m}_delta_loss_pretrained" in change.columns]
        lines += [
            "",
            f"{pair}: most important heads, in order ({n_docs} test documents; loss ablated - clean, "
            "other modes in brackets):",
            "",
            "| " + " | ".join(f"{v}: head (type), {modes[0]}-ablation task loss change" for v in VARIANTS) + " |",
            "|---|---|",
            *_ranked_heads_lines(change, modes, top),
        ]
        lines += [
            "",
            f"{pair}: heads whose attention patterns changed most (Jensen-Shannon distance):",
            "",
            "| head | JS distance | type pre -> ft | task loss change pre / ft (zero ablation) |",
            "|---|---|---|---|",
        ]
        for x in change.sort("js_distance", descending=True, nulls_last=True).head(top).iter_rows(named=True):
            lines.append(
                f"| L{x['layer']}H{x['head']} | {x['js_distance']:.3f} | {x['type_pretrained']} -> "
                f"{x['type_finetuned']} | {number(x.get('task_zero_delta_loss_pretrained'))} / "
                f"{number(x.get('task_zero_delta_loss_finetuned'))} |"
            )
    return lines


def frozen_lines(r: Results) -> list[str]:
    """Test accuracy of each body with a linear classifier fitted on its frozen features."""
    found = [
        (m, d, v, r.json(layout.FROZEN.file("metrics", model=m, variant=v, dataset=d)))
        for m, d in r.plan.pairs()
        for v in r.plan.frozen_variants(m, d)
    ]
    found = [(m, d, v, x) for m, d, v, x in found if x is not None]
    if not found:
        return []
    return [
        "",
        "Body + fitted linear classifier (test accuracy): "
        + ", ".join(f"{m} / {d} ({v}): {x['accuracy']:.3f}" for m, d, v, x in found),
    ]


def lm_lines(r: Results) -> list[str]:
    """Both variants' test LM loss and the mean per-token KL between them."""
    lines = []
    for model, dataset in r.plan.pairs():
        s = (
            r.json(layout.LM_COMPARE.file("summary", model=model, dataset=dataset))
            if r.plan.lm_compared(model)
            else None
        )
        if s:
            lines.append(
                f"| {model} / {dataset} | {r.plan.kind(model)} | {s['pretrained']['loss']:.4f} "
                f"| {s['finetuned']['loss']:.4f} | {s['kl']['mean']:.4f} | {s['kl']['q99']:.4f} "
                f"| {s['agreement']:.3f} |"
            )
    if not lines:
        return []
    header = "| model / dataset | variant | LM loss pretrained | LM loss fine-tuned | mean KL | KL 99% | top-1 agree |"
    return ["", header, "|---|---|---|---|---|---|---|", *lines]


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--config", default="config.yaml", help="the study's config file")
    parser.add_argument("--results", default=layout.RESULTS, help="the study's results folder")
    args = parser.parse_args(argv)
    print(summary(config.load_file(args.config), args.results))
