"""The README's table of the diffing methods side by side (`workflow.report.summary`)."""

from __future__ import annotations

from workflow import layout


def _floor_cell(e: dict | None) -> str:
    if not e:
        return "-"
    mark = " *" if e["exceeds_floor"] else ""
    return f"{e['diff']:.3f} / {e['floor']:.3f} ({e['excess']:+.3f} ± {(e['high'] - e['low']) / 2:.3f}){mark}"


def _task_recovered(c: dict) -> str:
    task = [(c.get("downstream") or {}).get(v, {}).get("task") for v in ("pretrained", "finetuned")]
    if not all(task):
        return ""
    return f", task loss recovered {task[0]['loss_recovered']:.3f} / {task[1]['loss_recovered']:.3f}"


def _crosscoder_cell(c: dict) -> str:
    k, robust = c["classes"], c["robust"]
    return (
        f"{k['shared']} / {k.get('other', 0)} / {k['pretrained_only']} ({robust['pretrained_only']}) / "
        f"{k['finetuned_only']} ({robust['finetuned_only']}), "
        f"FVU {c['fvu']['pretrained']:.3f} / {c['fvu']['finetuned']:.3f}" + _task_recovered(c)
    )


def methods_lines(r) -> list[str]:
    """Per diffed layer: the matching's categories against their seed floor, stage-wise
    fine-tuning's categories and the crosscoder's classes (diff.json, stagewise.json, crosscoder.json)."""
    lines = []
    for model, dataset in r.plan.pairs():
        for sae in r.plan.saes:
            for site, layer in r.plan.sae_scope(model, dataset, sae):
                w = {"model": model, "dataset": dataset, "site": site, "layer": layer}
                d = r.json(layout.DIFF.file("summary", sae=sae, **w))
                if d is None:
                    continue
                excess = (d.get("seed_baseline") or {}).get("excess", {})
                stage = r.json(layout.STAGEWISE.file("summary", sae=sae, **w))
                cats = stage["categories"] if stage else None
                stage_cell = (
                    " / ".join(str(cats["pretrained"][c]) for c in ("kept", "changed", "removed"))
                    + f" / {cats['finetuned']['new']}"
                    if cats
                    else "-"
                )
                ccs = [
                    r.json(layout.CROSSCODER.file("summary", crosscoder=cc, **w))
                    for cc in r.plan.layer_crosscoders(model, dataset, site, layer)
                ]
                cc_cell = "; ".join(_crosscoder_cell(c) for c in ccs if c) or "-"
                lines.append(
                    f"| {model} / {dataset} | {sae} | {site} | {layer} | "
                    + " | ".join(_floor_cell(excess.get(c)) for c in ("retained", "drifted", "overwritten"))
                    + f" | {stage_cell} | {cc_cell} |"
                )
    if not lines:
        return []
    return [
        "",
        "Diffing methods side by side (fractions of pretrained SAE features: diff / seed floor (difference ± 95% "
        "half-width), * more change than between two seeds: retained below its floor, drifted or overwritten above; "
        "stage-wise: counts of features; crosscoder: live latents by relative "
        "decoder norm, between: outside the classes' bands):",
        "",
        "| model / dataset | recipe | site | layer | retained | drifted | overwritten "
        "| stage-wise kept / changed / removed / new "
        "| crosscoder live latents shared / between / pre-only (robust) / ft-only (robust), FVU and task loss "
        "recovered pre / ft |",
        "|---|" + "---|" * 8,
        *lines,
    ]
