"""The report page's sections, as data: each builder takes parsed inputs (JSON dicts, polars
tables, the SAE catalogue of `workflow.report.feature_data`) and returns plain values for its
template: `Table`s of numbers, text and `Link`s, the `Image`s to show, a few numbers for the
prose. Nothing here reads a file or writes HTML; the report stage reads, copies the plots and
renders ``templates/report.html.j2``. The probes and k-means sections are in
`workflow.report.probe_sections`, the diffing methods in `workflow.report.methods_sections`, the
study index in `workflow.report.study_index`.

Rows that name an SAE feature link to its feature page (`feature_link`); which SAE a row
belongs to comes from the recipe, site, layer and variant fields of the data, never from a
folder's name.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow.datasets.baseline import shortfall
from workflow.layout import VARIANTS
from workflow.report.render import Image, Link, Note, Parts, Pill, Table, rel
from workflow.report.rows import (
    FEATURE_PAGE,
    HEADS_PAGE,
    SAE_COLUMNS,
    feature_link,
    head_link,
    sae_keys,
    sae_order,
    sae_row,
)
from workflow.store.files import json_safe, nan_to_null

KINDS = {
    "classify": "sequence-classification fine-tune on this dataset (made by the workflow)",
    "causal_lm": "next-token fine-tune on this dataset's training text (made by the workflow)",
    "masked_lm": "masked-token fine-tune on this dataset's training text (made by the workflow)",
    "checkpoint": "an existing checkpoint, compared with its base on every dataset of the study",
}


def variant(kind: str, metrics: dict | None, source: str | None) -> dict:
    """What the fine-tuned variant is, and how its fine-tuning ran (where the workflow made it)."""
    train = metrics["train"] if metrics else None
    method = metrics.get("method", "full") if metrics else None
    return {"kind": kind, "text": KINDS[kind], "source": source, "train": train, "method": method,
            "device": metrics["device"] if metrics else None}  # fmt: skip


def accuracy(metrics: dict | None, meta: dict, frozen: dict, kind: str) -> dict | None:
    """Test accuracy and macro-F1 of each variant's task classifier (None on unlabelled data).
    `frozen`: {variant: metrics.json} of the classifiers fitted on frozen features."""
    if not meta.get("labelled", True):
        return None
    rows = []
    if kind == "classify":
        rows.append(
            ["pretrained (fresh classifier)", metrics["pretrained"]["accuracy"], metrics["pretrained"]["macro_f1"]]
        )
    for v in VARIANTS:
        if v == "finetuned" and kind == "classify":
            rows.append(["fine-tuned", metrics["finetuned"]["accuracy"], metrics["finetuned"]["macro_f1"]])
        elif frozen.get(v):
            name = "pretrained" if v == "pretrained" else "fine-tuned"
            rows.append([f"{name} + fitted linear classifier", frozen[v]["accuracy"], frozen[v]["macro_f1"]])
    rows.append(["bag-of-words baseline", meta["bow_baseline"]["accuracy"], meta["bow_baseline"]["macro_f1"]])
    return {
        "n_train": meta["n_train"],
        "n_test": meta["n_test"],
        "labels": ", ".join(map(str, meta["label_names"])),
        "table": Table(["model", "accuracy", "macro-F1"], rows, "accuracy", 4),
    }


def truncation(summaries: dict[str, dict], threshold: float) -> dict:
    """What truncation cut from each split's tokens table (stage tokens' <split>.json): the section
    (None without summaries) and a warning for each split that lost more than `threshold` of its
    tokens (tokenize.truncation_warning)."""
    if not summaries:
        return {"section": None, "warnings": []}
    rows, warnings = [], []
    for split, t in sorted(summaries.items(), key=lambda kv: kv[0] != "train"):
        rows.append(
            [split, *(t[k] for k in ("documents", "documents_truncated", "tokens_kept", "tokens_cut", "cut_share"))]
        )
        if t["cut_share"] > threshold:
            total = t["tokens_cut"] + t["tokens_kept"]
            warnings.append(
                f"{split} split: truncation at max_length {t['max_length']} cut {t['cut_share']:.0%} of the tokens "
                f"({t['tokens_cut']:,} of {total:,}; {t['documents_truncated']} of {t['documents']} documents cut): "
                f"every stage sees only the first {t['max_length']} tokens of each document. Raise "
                "tokenize.max_length (or the model's max_length), or set tokenize.stride to read long documents "
                f"in windows; tokenize.truncation_warning ({threshold}) sets this threshold."
            )
    header = ["split", "documents", "documents cut", "tokens kept", "tokens cut", "share of tokens cut"]
    first = next(iter(summaries.values()))
    table = Table(header, rows, "truncation", 3)
    section = {"max_length": first["max_length"], "stride": first.get("stride"), "table": table}
    return {"section": section, "warnings": warnings}


def task_warnings(metrics: dict | None, meta: dict, frozen: dict, kind: str) -> list[str]:
    """Where the classification fine-tune did not learn the task (`baseline.shortfall`): the report
    page and the study index say so in a banner."""
    if kind != "classify" or not metrics:
        return []
    warning = shortfall(metrics["finetuned"]["accuracy"], meta)
    return [warning] if warning else []


def task_accuracy(metrics: dict | None, frozen: dict, kind: str) -> dict[str, float]:
    """{variant: test accuracy} (the study index's numbers): a classification fine-tune's before and
    after (the pretrained body with a fresh classifier, as in the reference study); otherwise each
    variant's linear classifier on frozen features."""
    if kind == "classify" and metrics:
        return {v: metrics[v]["accuracy"] for v in VARIANTS}
    return {v: f["accuracy"] for v, f in frozen.items() if f}


# header -> field of lm.json's most-disagreeing tokens and documents
TOP_TOKENS = {"document": "doc_id", "context": "context", "token": "token", "pretrained predicts": "top_pretrained",
              "fine-tuned predicts": "top_finetuned", "loss pre": "loss_pretrained", "loss ft": "loss_finetuned",
              "KL": "kl"}  # fmt: skip
TOP_DOCUMENTS = {"document": "doc_id", "tokens": "n_tokens", "mean KL": "mean_kl", "max KL": "max_kl",
                 "at token": "max_kl_token", "context": "max_kl_context", "loss pre": "loss_pretrained",
                 "loss ft": "loss_finetuned"}  # fmt: skip


def _listed(records: list[dict], columns: dict[str, str], cls: str) -> Table:
    """One row per record, one column per (header, field) of `columns`."""
    return Table(list(columns), [[r[f] for f in columns.values()] for r in records], cls, 3)


def lm(summary: dict | None, image: Image | None) -> dict | None:
    """Both variants' LM loss on the test split, the per-token KL between their predictions, and the
    tokens and documents where they disagree most."""
    if summary is None:
        return None
    unit = "next-token" if summary["kind"] == "causal" else "masked-token"
    losses = Table(
        ["variant", f"test {unit} loss", "perplexity"],
        [[v, summary[v]["loss"], summary[v]["perplexity"]] for v in VARIANTS],
        "lm",
        4,
    )
    kl = summary["kl"]
    stats = Table(
        ["tokens", "documents", "mean KL", "median", "90%", "99%", "max", "top-1 agreement"],
        [[summary["n_tokens"], summary["n_docs"], kl["mean"], kl["q50"], kl["q90"], kl["q99"], kl["max"],
          summary["agreement"]]],
        "lm",
        4,
    )  # fmt: skip
    tokens = _listed(summary["top_tokens"], TOP_TOKENS, "lm-tokens")
    documents = _listed(summary["top_documents"], TOP_DOCUMENTS, "lm-docs")
    return {"unit": unit, "losses": losses, "stats": stats, "tokens": tokens, "documents": documents,
            "image": image, "change": summary["loss_change"]}  # fmt: skip


def similarity(table: pl.DataFrame, image: Image | None) -> dict:
    """Per layer: how similar the two variants' activations are on the same tokens."""
    rows = (
        table.sort("layer")
        .select(
            "layer", "hook_name", "n_tokens", "mean_cosine", "token_cosine", "cka_debiased", "cka_biased", "norm_ratio"
        )
        .rows()
    )
    header = [
        "layer",
        "hook",
        "tokens",
        "cos(mean)",
        "token cosine",
        "CKA (debiased)",
        "CKA (biased)",
        "norm ratio ft/pre",
    ]
    return {"image": image, "table": Table(header, [list(r) for r in rows], "similarity", 4)}


def saes(catalogue: list[dict], page_dir: str) -> dict:
    """The SAE quality table: the recipe links to the SAE's features, the last column to its folder."""
    rows, ordered = [], sorted(catalogue, key=lambda s: sae_order(s["eval"]))
    for s in ordered:
        row = sae_row(s["eval"])
        rows.append(
            [
                Link(f"{FEATURE_PAGE}#sae={s['key']}", row[0], "browse this SAE's features"),
                *row[1:],
                Link(rel(s["folder"], page_dir), "folder"),
            ]
        )
    warnings = [
        f"{s['recipe']} {s['site']} L{s['layer']} {s['variant']}: {s['eval']['l0_warning']}"
        for s in ordered
        if s["eval"].get("l0_warning")
    ]
    return {"table": Table([*SAE_COLUMNS, "files"], rows, "saes") if rows else None, "warnings": warnings}


def concepts(catalogue: list[dict]) -> dict | None:
    """Per SAE, the best single feature for each planted concept; None where the dataset plants none."""
    names = sorted({c for s in catalogue for c in s["concepts"]})
    if not names:
        return None
    rows = []
    for s in catalogue:
        cells = []
        for c in names:
            b = s["best"].get(c)
            cells.append(
                "n/a"
                if not b
                else Parts(
                    (
                        feature_link(s["key"], b["feature"]),
                        f"{b['f1']:.3f}",
                        Note(f"({b['precise_features']} precise, union recall {b['precise_union_recall']:.2f})"),
                    )
                )
            )
        rows.append([s["recipe"], s["site"], s["layer"], s["variant"], *cells])
    return {"concepts": names, "table": Table(["recipe", "site", "layer", "variant", *names], rows, "concepts")}


TRANSFER_PAIRS = (
    ("pretrained", "pretrained"),
    ("finetuned", "finetuned"),
    ("pretrained", "finetuned"),
    ("finetuned", "pretrained"),
)  # (SAE, activations)


CATEGORY_HEADER = ["recipe", "site", "layer", "retained", "drifted", "overwritten", "dead (pre)", "new", "dead (ft)",
                   "median matched cosine"]  # fmt: skip
TRANSFER_HEADER = ["recipe", "site", "layer", "EV pre SAE on pre", "task rec.", "EV ft SAE on ft", "task rec.",
                   "EV pre SAE on ft", "task rec.", "EV ft SAE on pre", "task rec."]  # fmt: skip
CHANGED_HEADER = ["recipe", "layer", "kind", "pretrained", "fine-tuned", "decoder cos", "act. corr.", "Δ frequency",
                  "pretrained top tokens", "fine-tuned top tokens"]  # fmt: skip


def category_row(d: dict) -> list:
    """A diff.json's feature counts: pretrained retained / drifted / overwritten / dead, fine-tuned new / dead."""
    pre, ft = d["categories"]["pretrained"]["counts"], d["categories"]["finetuned"]["counts"]
    return [
        d["sae"],
        d["site"],
        d["layer"],
        *(pre.get(c, 0) for c in ("retained", "drifted", "overwritten", "dead")),
        ft.get("new", 0),
        ft.get("dead", 0),
        d["matched_cosine_median"],
    ]


def transfer_row(d: dict) -> list:
    """Explained variance and task loss recovered of each SAE on each variant's activations."""
    by_pair = {(r["sae"], r["activations"]): r for r in d["transfer"]}
    cells = []
    for pair in TRANSFER_PAIRS:
        r = by_pair.get(pair, {})
        cells += [r.get("explained_variance"), r.get("task_loss_recovered")]
    return [d["sae"], d["site"], d["layer"], *json_safe(cells)]


def changed_table(d: dict, changed: pl.DataFrame, keys: dict) -> Table:
    """The most changed features of one diff, each linked to its feature page (both sides)."""
    pre_key, ft_key = (keys.get((d["sae"], d["site"], d["layer"], v)) for v in VARIANTS)
    rows = []
    for r in nan_to_null(changed).iter_rows(named=True):
        rows.append(
            [
                d["sae"],
                d["layer"],
                Pill(r["kind"]),
                feature_link(pre_key, r["pretrained_feature"]),
                feature_link(ft_key, r["finetuned_feature"]),
                r["decoder_cos"],
                r["act_corr"],
                r["delta_frequency"],
                " ".join((r["pretrained_top_tokens"] or [])[:4]),
                " ".join((r["finetuned_top_tokens"] or [])[:4]),
            ]
        )
    return Table(CHANGED_HEADER, rows, "changed")


def diff(diffs: list[dict], recipe_images: dict[str, list[Image]], catalogue: list[dict]) -> dict | None:
    """The feature diff: per-recipe plots, category counts and transfer per (recipe, site, layer), and
    each diff's most changed features. `diffs`: {"summary": diff.json, "changed": changed.parquet}."""
    if not diffs:
        return None
    keys = sae_keys(catalogue)
    ordered = sorted(diffs, key=lambda x: (x["summary"]["sae"], x["summary"]["site"], x["summary"]["layer"]))
    changed = []
    for x in ordered:
        d = x["summary"]
        table = changed_table(d, x["changed"], keys)
        changed.append({"title": f"{d['sae']} {d['site']} L{d['layer']}", "count": len(table.rows), "table": table})
    categories = Table(CATEGORY_HEADER, [category_row(x["summary"]) for x in ordered], "diff-categories")
    transfer = Table(TRANSFER_HEADER, [transfer_row(x["summary"]) for x in ordered], "transfer")
    recipes = [{"name": name, "images": [i for i in images if i]} for name, images in sorted(recipe_images.items())]
    return {"recipes": recipes, "categories": categories, "transfer": transfer, "changed": changed}


def heads(change: pl.DataFrame, images: dict[str, Image | None], top: int = 8) -> dict:
    """The heads whose ablation costs each variant most task loss (side by side, by rank), and the heads
    whose attention patterns changed most (`change`: heads_summary's changes table)."""
    change = nan_to_null(change)
    modes = [m for m in ("zero", "mean") if f"task_{m}_delta_loss_pretrained" in change.columns]
    ranked = {
        v: change.sort(f"task_{modes[0]}_delta_loss_{v}", descending=True, nulls_last=True).head(top).rows(named=True)
        for v in VARIANTS
    }
    rows = []
    for i in range(min(top, len(change))):
        row = [i + 1]
        for v in VARIANTS:
            r = ranked[v][i]
            row += [head_link(r["layer"], r["head"]), r[f"type_{v}"], *(r[f"task_{m}_delta_loss_{v}"] for m in modes)]
        rows.append(row)
    per_variant = ["head", "type", *(f"{m} abl. Δloss" for m in modes)]
    important = Table(
        ["rank", *(f"pre {c}" for c in per_variant), *(f"ft {c}" for c in per_variant)], rows, "heads-important"
    )
    most = change.sort("js_distance", descending=True, nulls_last=True).head(top)
    changed = Table(
        ["head", "JS distance", "type pre", "type ft", *(f"{m} abl. Δloss {v[:3]}" for m in modes for v in VARIANTS)],
        [
            [
                head_link(r["layer"], r["head"]),
                r["js_distance"],
                r["type_pretrained"],
                r["type_finetuned"],
                *(r[f"task_{m}_delta_loss_{v}"] for m in modes for v in VARIANTS),
            ]
            for r in most.iter_rows(named=True)
        ],
        "heads-changed",
    )
    return {
        "page": HEADS_PAGE,
        "ablation_image": images.get("ablation"),
        "change_image": images.get("change"),
        "important": important,
        "changed": changed,
    }


def files(paths: dict, extracts: list[tuple[str, dict]], page_dir: str) -> dict:
    """Links to the results the page was made from (relative: valid while the report sits in results/), and
    to each activation set (`extracts`: (path, extract.json) of each variant and split)."""
    sets = []
    for path, summary in extracts:
        folder = Path(path).parent  # the extract folder holds its sets (extract.json names them)
        sets.append(
            {
                "variant": summary["variant"],
                "split": summary["split"],
                "n_tokens": summary["n_tokens"],
                "links": [Link(rel(folder / s, page_dir), s) for s in summary["sets"]],
            }
        )
    model_folder = Path(paths["metrics"]).parent if paths.get("metrics") else None
    return {
        "metrics": rel(paths["metrics"], page_dir) if paths.get("metrics") else None,
        "model_folder": Link(rel(model_folder, page_dir), str(model_folder)) if model_folder else None,
        "frozen": {v: rel(f, page_dir) for v, f in (paths.get("frozen") or {}).items()},
        "lm": rel(paths["lm_compare"], page_dir) if paths.get("lm_compare") else None,
        "similarity": rel(paths["similarity"], page_dir),
        "meta": rel(paths["meta"], page_dir),
        "activation_sets": sets,
    }
