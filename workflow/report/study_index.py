"""The study index: the numbers each report folder hands it (summary.json) and its table."""

from __future__ import annotations

import polars as pl

from workflow.report.render import Link, Parts, Table, Thumb, rel
from workflow.store.files import json_safe, nan_to_null


def study_numbers(
    accuracy: dict,
    similarity_table: pl.DataFrame,
    diff_summaries: list[dict],
    probe_table: pl.DataFrame | None,
    lm: dict | None = None,
) -> dict:
    """The few numbers the study index shows for one (model, dataset). `accuracy`: {variant: test
    accuracy} of each variant's task classifier (empty on unlabelled data); `lm`: the lm_compare summary."""
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
            "accuracy_pretrained": accuracy.get("pretrained"),
            "accuracy_finetuned": accuracy.get("finetuned"),
            "lm_loss_pretrained": lm["pretrained"]["loss"] if lm else None,
            "lm_loss_finetuned": lm["finetuned"]["loss"] if lm else None,
            "mean_kl": lm["kl"]["mean"] if lm else None,
            "last_layer_cka": last["cka_debiased"],
            "last_layer_mean_cosine": last["mean_cosine"],
            "retained_fraction": kept / live if live else None,
            "best_probe": best_probe,
        }
    )


INDEX_HEADER = ["model / dataset", "fine-tuned variant", "similarity by layer", "accuracy pretrained",
                "accuracy fine-tuned", "LM loss pretrained / fine-tuned", "mean KL", "last-layer CKA (debiased)",
                "last-layer cos(mean)", "SAEs", "pretrained features retained or drifted", "best probe accuracy",
                "pages"]  # fmt: skip


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
                s.get("variant", ""),
                plot,
                s["accuracy_pretrained"],
                s["accuracy_finetuned"],
                Parts((s.get("lm_loss_pretrained"), s.get("lm_loss_finetuned")), " / ")
                if s.get("lm_loss_pretrained") is not None
                else None,
                s.get("mean_kl"),
                s["last_layer_cka"],
                s["last_layer_mean_cosine"],
                s["n_saes"],
                s["retained_fraction"],
                s["best_probe"],
                Parts(tuple(links), " · "),
            ]
        )
    return Table(INDEX_HEADER, rows, "index")
