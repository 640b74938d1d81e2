"""The report's "Diffing methods side by side" section: the matching's categories against their
seed floor, stage-wise fine-tuning, the crosscoders' classes and quality, and the methods' agreement."""

from __future__ import annotations

from workflow.report.render import Table

METHODS_HEADER = [
    "recipe",
    "site",
    "layer",
    "retained: diff / floor",
    "drifted: diff / floor",
    "overwritten: diff / floor",
    "beyond seed noise",
    "stage-wise kept / changed / removed / new",
    "crosscoder shared / pre-only / ft-only (robust)",
    "κ matching–stage-wise",
    "κ matching–crosscoder",
]


def _share(e: dict | None) -> str:
    return (
        "-" if not e else f"{e['diff']:.3f} / {e['floor']:.3f} ({e['excess']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}])"
    )


CROSSCODER_HEADER = [
    "crosscoder",
    "site",
    "layer",
    "latents",
    "FVU pretrained / fine-tuned",
    "L0",
    "dead",
    "task loss recovered: pretrained / fine-tuned",
    "LM loss recovered: pretrained / fine-tuned",
]


def _recovered(downstream: dict, what: str) -> str:
    values = [(downstream.get(v) or {}).get(what, {}).get("loss_recovered") for v in ("pretrained", "finetuned")]
    return "-" if all(x is None for x in values) else " / ".join("-" if x is None else f"{x:.3f}" for x in values)


def crosscoder_quality(crosscoders: dict) -> Table | None:
    """One row per crosscoder: reconstruction per side and each side spliced into its variant."""
    rows = [
        [
            c["crosscoder"],
            c["site"],
            c["layer"],
            c["d_sae"],
            f"{c['fvu']['pretrained']:.3f} / {c['fvu']['finetuned']:.3f}",
            c["l0"],
            c["dead_fraction"],
            _recovered(c.get("downstream") or {}, "task"),
            _recovered(c.get("downstream") or {}, "lm"),
        ]
        for key in sorted(crosscoders)
        for c in crosscoders[key]
    ]
    return Table(CROSSCODER_HEADER, rows, "crosscoder-quality") if rows else None


def methods(diffs: list[dict], method_summaries: dict, crosscoders: dict) -> dict | None:
    """The diffing methods side by side per (recipe, site, layer): the matching's categories next
    to their seed floor (the excess with its 95% interval), stage-wise fine-tuning's categories,
    the crosscoders' latent classes at that layer and the methods' agreement (Cohen's kappa).
    `method_summaries`: {(sae, site, layer): methods.json}; `crosscoders`: {(site, layer): [crosscoder.json]}."""
    if not diffs or not (method_summaries or crosscoders):
        return None
    rows, notes = [], []
    for x in sorted(diffs, key=lambda x: (x["summary"]["sae"], x["summary"]["site"], x["summary"]["layer"])):
        d = x["summary"]
        key = (d["sae"], d["site"], d["layer"])
        base = d.get("seed_baseline")
        excess = base["excess"] if base else {}
        beyond = "-" if not base else ", ".join(c for c, e in excess.items() if e["exceeds_floor"]) or "none"
        if base and base["within_floor"]:
            notes.append(
                f"{d['sae']} {d['site']} L{d['layer']}: {', '.join(base['within_floor'])} within the seed floor"
            )
        m = method_summaries.get(key) or {}
        stage = m.get("counts", {}).get("stagewise")
        stage_cell = " / ".join(str(stage.get(c, 0)) for c in ("kept", "changed", "removed", "new")) if stage else "-"
        ccs = crosscoders.get((d["site"], d["layer"]), [])
        cc_cell = (
            "; ".join(
                f"{c['crosscoder']}: {c['classes']['shared']} / {c['classes']['pretrained_only']} "
                f"({c['robust']['pretrained_only']}) / {c['classes']['finetuned_only']} "
                f"({c['robust']['finetuned_only']})"
                for c in ccs
            )
            or "-"
        )
        agreement = m.get("agreement", {})
        kappa_stage = (agreement.get("matching|stagewise") or {}).get("kappa")
        kappas_cc = [
            v.get("kappa") for k, v in agreement.items() if k.startswith("matching|") and k != "matching|stagewise"
        ]
        shares = [_share(excess.get(c)) for c in ("retained", "drifted", "overwritten")]
        kappa_cc = kappas_cc[0] if kappas_cc else None
        rows.append([d["sae"], d["site"], d["layer"], *shares, beyond, stage_cell, cc_cell, kappa_stage, kappa_cc])
    return {
        "table": Table(METHODS_HEADER, rows, "methods"),
        "notes": notes,
        "crosscoders": crosscoder_quality(crosscoders),
    }
