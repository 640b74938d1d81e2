"""The README's tables of models trained from scratch (`workflow.report.summary`): when each root
formed and how well one SAE latent and one linear unit detect it (emergence.json), and the diffing
methods scored against the declared change (truth.json)."""

from __future__ import annotations

from workflow import layout


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def emergence_lines(r) -> list[str]:
    lines = []
    for model, corpus in r.plan.emergence_pairs():
        e = r.json(layout.EMERGENCE.file("summary", model=model, dataset=corpus))
        if e is None:
            continue
        sae = r.table(layout.EMERGENCE.file("sae", model=model, dataset=corpus))
        best, at = {}, {}
        if sae is not None and len(sae):
            for row in sae.sort("f1", descending=True).unique("factor", keep="first").iter_rows(named=True):
                best[row["factor"]] = f"{row['f1']:.3f} ({row['sae']} L{row['layer']})"
            if "threshold_f1" in sae.columns:
                thresholded = sae.sort("threshold_f1", descending=True).unique("factor", keep="first")
                for row in thresholded.iter_rows(named=True):
                    at[row["factor"]] = f"{row['threshold_f1']:.3f} (at {row['threshold_fraction']:.1f} x max)"
        detector = e.get("detector_f1") or {}
        lines += [
            "",
            f"{model} trained from scratch on {corpus}: snapshots at steps {', '.join(map(str, e['snapshots']))}; "
            f"{e['roots_decoded_095']} of {e['n_roots']} roots decoded at balanced accuracy >= 0.95 at some layer:",
            "",
            "| factor | best layer | balanced accuracy | selectivity | decoded from step "
            "| best SAE latent F1 | at its best threshold | one linear unit F1 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in e["roots"] + e.get("composites", []):
            unit = detector.get(f["factor"])
            lines.append(
                f"| {f['factor']} | {f['best_layer']} | {f['best_balanced_accuracy']:.3f} | {f['selectivity']:.3f} "
                f"| {_num(f.get('formed_at'))} | {best.get(f['factor'], '-')} | {at.get(f['factor'], '-')} "
                f"| {_num(unit['f1']) if unit else '-'} |"
            )
    return lines


def truth_lines(r) -> list[str]:
    rows = []
    for model, dataset in r.plan.pairs():
        for folder in r.plan.truth_dirs(model, dataset):
            t = r.json(f"{folder}/{layout.TRUTH.names['summary']}")
            d = r.json(f"{folder.rsplit('/', 1)[0]}/{layout.DIFF.names['summary']}")
            if t is None or d is None:
                continue
            for method, s in t["scores"].items():
                cells = [
                    f"{_num(c['precision'])} / {_num(c['recall'])}" if (c := s["categories"].get(k)) else "-"
                    for k in ("kept", "changed", "removed", "new")
                ]
                rows.append(
                    f"| {model} / {dataset} | {d['sae']} {d['site']} L{d['layer']} | {method} "
                    f"| {' | '.join(cells)} | {s['accuracy']:.3f} |"
                )
    if not rows:
        return []
    return [
        "",
        "The diffing methods against the declared change (precision / recall over roots per truth category; precision "
        "'-': the method put no root there, '-' alone: no root truly there; share of roots right):",
        "",
        "| model / dataset | SAE | method | kept | changed | removed | new | right |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
