"""The study index: the numbers each report folder hands it (summary.json) and its table."""

from __future__ import annotations

import polars as pl

from workflow.report.render import Link, Parts, Table, Thumb, rel
from workflow.store.files import json_safe, nan_to_null


def study_numbers(
    metrics: dict, similarity_table: pl.DataFrame, diff_summaries: list[dict], probe_table: pl.DataFrame | None
) -> dict:
    """The few numbers the study index shows for one (model, dataset)."""
    last = nan_to_null(similarity_table).sort("layer").row(-1, named=True)
    kept = live = 0
    for d in diff_summaries:
        counts = d["categories"]["pretrained"]["counts"]
        kept += counts.get("retained", 0) + counts.get("drifted", 0)
        live += sum(counts.values()) - counts.get("dead", 0)
    best_probe = None
    if probe_table is not None:
        finetuned = nan_to_null(probe_table).filter(pl.col("variant") == "finetuned")
        best_probe = finetuned["accuracy"].max() if len(finetuned) else None
    return json_safe(
        {
            "accuracy_pretrained": metrics["pretrained"]["accuracy"],
            "accuracy_finetuned": metrics["finetuned"]["accuracy"],
            "last_layer_cka": last["cka_debiased"],
            "last_layer_mean_cosine": last["mean_cosine"],
            "retained_fraction": kept / live if live else None,
            "best_probe": best_probe,
        }
    )


INDEX_HEADER = ["model / dataset", "similarity by layer", "accuracy pretrained", "accuracy fine-tuned",
                "last-layer CKA (debiased)", "last-layer cos(mean)", "SAEs", "pretrained features retained or drifted",
                "best probe accuracy", "pages"]  # fmt: skip


def index(pages: list[tuple[str, dict]], out_dir: str) -> Table:
    """The study index: one row per report folder, from (folder, its summary.json); links relative to `out_dir`."""
    rows = []
    for folder, s in pages:
        base, files = rel(folder, out_dir), s["pages"]
        links = [Link(f"{base}/{files['report']}", "report")]
        links += [Link(f"{base}/{files[name]}", name) for name in ("features", "sentences") if files.get(name)]
        plot = (
            Thumb(f"{base}/{files['report']}#similarity", f"{base}/{files['similarity_plot']}", "similarity by layer")
            if files.get("similarity_plot")
            else ""
        )
        rows.append(
            [
                f"{s['model']} / {s['dataset']}",
                plot,
                s["accuracy_pretrained"],
                s["accuracy_finetuned"],
                s["last_layer_cka"],
                s["last_layer_mean_cosine"],
                s["n_saes"],
                s["retained_fraction"],
                s["best_probe"],
                Parts(tuple(links), " · "),
            ]
        )
    return Table(INDEX_HEADER, rows, "index")
