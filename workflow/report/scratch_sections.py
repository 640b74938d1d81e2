"""The report's sections for a model trained from scratch on boards with known abstractions: when and
where each abstraction formed (stage `emergence`, on the model's corpus), and every diffing method
scored against the declared change of the fine-tuning corpus (stage `ground_truth`)."""

from __future__ import annotations

import polars as pl

from workflow.report.render import Image, Note, Parts, Table

EMERGENCE_HEADER = [
    "factor",
    "best layer",
    "balanced accuracy",
    "selectivity",
    "decoded from step",
    "best SAE latent: F1 (recipe, site, layer)",
    "at its best threshold: F1 (fraction of its max)",
    "one linear unit: F1 (layer)",
]
TRUTH_HEADER = ["recipe", "site", "layer", "method", "category", "roots", "predicted", "precision", "recall", "F1"]


def _best_latents(sae_table: pl.DataFrame, column: str = "f1") -> dict[str, dict]:
    """factor -> the row of the SAE latent that detects it best by `column`, over recipes and layers."""
    if not len(sae_table) or column not in sae_table.columns:
        return {}
    best = sae_table.sort(column, descending=True).unique("factor", keep="first")
    return {r["factor"]: r for r in best.iter_rows(named=True)}


def emergence(summary: dict, sae_table: pl.DataFrame, image: Image | None) -> dict:
    """The emergence plot, and per root and composite: where and how well the final model decodes it,
    from which training step, and the best single SAE latent for it."""
    latents, detectors = _best_latents(sae_table), summary.get("detector_f1") or {}
    thresholded = _best_latents(sae_table, "threshold_f1")
    rows = []
    for factor in summary["roots"] + summary.get("composites", []):
        best, unit = latents.get(factor["factor"]), detectors.get(factor["factor"])
        at = thresholded.get(factor["factor"])
        rows.append(
            [
                factor["factor"],
                factor["best_layer"],
                factor["best_balanced_accuracy"],
                factor["selectivity"],
                factor["formed_at"] if factor.get("formed_at") is not None else Note("not decoded"),
                Parts((best["f1"], Note(f"{best['sae']}, {best['site']}, L{best['layer']}"))) if best else "-",
                Parts((at["threshold_f1"], Note(f"{at['threshold_fraction']:.1f}"))) if at else "-",
                Parts((unit["f1"], Note(f"L{unit['layer']}"))) if unit else "-",
            ]
        )
    return {
        "corpus": summary.get("corpus"),
        "image": image,
        "table": Table(EMERGENCE_HEADER, rows, cls="emergence"),
        "decoded": summary["roots_decoded_095"],
        "n_roots": summary["n_roots"],
        "threshold": summary.get("formed_threshold", 0.95),
        "snapshots": summary["snapshots"],
        "mcc": list(summary.get("sae", [])),
    }


def truth(scored: dict) -> dict | None:
    """Per (recipe, site, layer) and method: precision, recall and F1 of each category over the roots
    whose truth the declared change fixes."""
    if not scored:
        return None
    rows, accuracy = [], []
    for (sae, site, layer), result in sorted(scored.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        for method, s in result["scores"].items():
            accuracy.append([sae, site, layer, method, s["accuracy"], s["n_roots"]])
            for category, c in s["categories"].items():
                rows.append(
                    [
                        sae,
                        site,
                        layer,
                        method,
                        category,
                        c["n_true"],
                        c["n_predicted"],
                        c["precision"],
                        c["recall"],
                        c["f1"],
                    ]
                )
    first = next(iter(scored.values()))
    return {
        "table": Table(TRUTH_HEADER, rows, cls="truth"),
        "accuracy": Table(["recipe", "site", "layer", "method", "share of roots right", "roots"], accuracy),
        "min_f1": first["min_f1"],
        "truth": first["truth"],
    }
