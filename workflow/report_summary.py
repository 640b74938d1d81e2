"""The README's markdown tables from a finished study's results folder (`python -m workflow report summary`)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow import io
from workflow.report import SAE_COLUMNS, sae_rows
from workflow.report_html import fmt


def summary(results: str = "results") -> str:
    """The README's tables (markdown) from a finished study's results folder."""
    root = Path(results)
    acc = ["| model / dataset | train / test docs | pretrained, fresh head | fine-tuned | fine-tuned macro-F1 "
           "| bag-of-words LR | fine-tuning time |", "|---|---|---|---|---|---|---|"]
    sims = {}
    for metrics_path in sorted(root.glob("models/*/*/metrics.json")):
        model, dataset = metrics_path.parent.parent.name, metrics_path.parent.name
        m, meta = io.read_json(metrics_path), io.read_json(root / f"data/{dataset}/meta.json")
        acc.append(f"| {model} / {dataset} | {meta['n_train']} / {meta['n_test']} | {m['pretrained']['accuracy']:.3f} "
                   f"| {m['finetuned']['accuracy']:.3f} | {m['finetuned']['macro_f1']:.3f} "
                   f"| {meta['bow_baseline']['accuracy']:.3f} | {m['train']['seconds']:.0f} s |")
        sim_path = root / f"analysis/{model}/{dataset}/similarity.parquet"
        if sim_path.exists():
            sims[f"{model} / {dataset}"] = pl.read_parquet(sim_path).sort("layer")
    lines = acc + ["", "Per layer: cos(mean) / token cosine / CKA debiased / CKA biased", "",
                   "| layer | " + " | ".join(sims) + " |", "|---|" + "---|" * len(sims)]
    for layer in range(max((len(t) for t in sims.values()), default=0)):
        cells = []
        for table in sims.values():
            r = table.row(layer, named=True) if layer < len(table) else None
            cells.append("" if r is None else f"{r['mean_cosine']:.3f} / {r['token_cosine']:.3f} / "
                         f"{r['cka_debiased']:.3f} / {r['cka_biased']:.3f}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("tokens compared: " + ", ".join(f"{k}: {t['n_tokens'][0]}" for k, t in sims.items()))
    evals = sorted(str(p) for p in root.glob("saes/*/*/*/*/*/*/eval.json"))
    if evals:
        lines += ["", "SAEs (held-out test tokens):", "",
                  "| model / dataset | " + " | ".join(SAE_COLUMNS) + " |", "|---|" + "---|" * len(SAE_COLUMNS)]
        by_pair = {}
        for path in evals:
            e = io.read_json(path)
            by_pair.setdefault(f"{e['model']} / {e['dataset']}", []).append(path)
        for pair, paths in by_pair.items():
            for row in sae_rows(paths):
                lines.append(f"| {pair} | " + " | ".join(fmt(v) for v in row) + " |")
    lines += concept_lines(root) + diff_lines(root) + probe_lines(root) + head_lines(root)
    heads = sorted(root.glob("heads/*/*/metrics.json"))
    if heads:
        lines += ["", "Pretrained body + fitted linear head (test accuracy): " + ", ".join(
            f"{p.parent.parent.name} / {p.parent.name}: {io.read_json(p)['accuracy']:.3f}" for p in heads)]
    return "\n".join(lines)


def concept_lines(root: Path) -> list[str]:
    """Best single-feature F1 per planted concept, per recipe, layer and variant (features.json)."""
    best, split = {}, {}
    for path in sorted(root.glob("saes/*/*/*/*/*/*/features.json")):
        model, variant, dataset, site, layer, recipe = path.parts[-7:-1]
        for concept, b in io.read_json(path)["best_feature_per_concept"].items():
            key, column = (model, dataset, recipe, site, concept), (int(layer[1:]), variant)
            best.setdefault(key, {})[column] = b and b["f1"]
            split.setdefault(key, {})[column] = b and f"{b['precise_features']} / {b['precise_union_recall']:.2f}"
    if not best:
        return []
    columns = sorted({key for cells in best.values() for key in cells}, key=lambda k: (k[0], k[1] != "pretrained"))
    head = "| model / dataset | recipe | site | concept | " + " | ".join(f"L{l} {v[:3]}" for l, v in columns) + " |"
    lines = []
    for title, table in (("Best single-feature F1 per planted concept (features.json; test tokens):", best),
                         ("Features with precision >= 0.8 for the concept / recall of their union:", split)):
        lines += ["", title, "", head, "|---|---|---|---|" + "---|" * len(columns)]
        for (model, dataset, recipe, site, concept), cells in table.items():
            lines.append(f"| {model} / {dataset} | {recipe} | {site} | {concept} | "
                         + " | ".join(fmt(cells.get(c)) for c in columns) + " |")
    return lines


def diff_lines(root: Path) -> list[str]:
    """Category fractions and SAE transfer per layer (diff.json)."""
    paths = sorted(root.glob("analysis/*/*/*/L*/*/diff.json"))
    if not paths:
        return []
    lines = ["", "Feature diff, pretrained vs fine-tuned SAE (fractions of features; diff.json):", "",
             "| model / dataset | recipe | site | layer | retained | drifted | overwritten | dead (pre) | new | dead (ft) "
             "| median matched cosine | median cosine to init pre / ft | EV own pre / ft | EV pre SAE on ft / ft SAE on pre "
             "| task loss rec. own ft / pre SAE on ft | own pre / ft SAE on pre |", "|---|" + "---|" * 15]
    for path in paths:
        model, dataset = path.parts[-6], path.parts[-5]
        d = io.read_json(path)
        pre, ft = d["categories"]["pretrained"]["fractions"], d["categories"]["finetuned"]["fractions"]
        t = {(r["sae"], r["activations"]): r for r in d["transfer"]}
        pp, ff, pf, fp = (t[k] for k in (("pretrained", "pretrained"), ("finetuned", "finetuned"),
                                          ("pretrained", "finetuned"), ("finetuned", "pretrained")))
        lines.append(
            f"| {model} / {dataset} | {path.parent.name} | {d['site']} | {d['layer']} | {pre['retained']:.3f} "
            f"| {pre['drifted']:.3f} | {pre['overwritten']:.3f} | {pre['dead']:.3f} | {ft['new']:.3f} | {ft['dead']:.3f} "
            f"| {d['matched_cosine_median']:.3f} | {d['init_cosine_median']['pretrained']:.3f} / "
            f"{d['init_cosine_median']['finetuned']:.3f} | {pp['explained_variance']:.3f} / {ff['explained_variance']:.3f} "
            f"| {pf['explained_variance']:.3f} / {fp['explained_variance']:.3f} "
            f"| {fmt(ff['task_loss_recovered'])} / {fmt(pf['task_loss_recovered'])} "
            f"| {fmt(pp['task_loss_recovered'])} / {fmt(fp['task_loss_recovered'])} |")
    return lines


def _layer_columns(table: pl.DataFrame) -> list[tuple]:
    keys = table.select("layer", "variant", "site").unique().rows()
    return sorted(keys, key=lambda k: (k[2], k[0], k[1] != "pretrained"))


def _pivot_lines(title: str, table: pl.DataFrame, keys: list[str], value) -> list[str]:
    """One markdown row per distinct `keys`, one column per (layer, variant, site)."""
    columns = _layer_columns(table)
    multi_site = len({c[2] for c in columns}) > 1
    names = [f"L{l} {v[:3]}" + (f" {s}" if multi_site else "") for l, v, s in columns]
    lines = ["", title, "", "| " + " | ".join(keys) + " | " + " | ".join(names) + " |",
             "|" + "---|" * (len(keys) + len(names))]
    cells: dict[tuple, dict] = {}
    for row in table.iter_rows(named=True):
        cells.setdefault(tuple(row[k] for k in keys), {})[(row["layer"], row["variant"], row["site"])] = value(row)
    for key, by_column in cells.items():
        lines.append("| " + " | ".join(str(k) for k in key) + " | "
                     + " | ".join(by_column.get(c, "") for c in columns) + " |")
    return lines


def probe_lines(root: Path) -> list[str]:
    """Probe accuracy by layer, k-sparse curves, concept probes and clusters (probe_summary/)."""
    lines = []
    folders = sorted(root.glob("analysis/*/*/probe_summary"))
    for folder in folders:
        pair = f"{folder.parent.parent.name} / {folder.parent.name}"
        probes = pl.read_parquet(folder / "probes.parquet")
        lines += _pivot_lines(f"{pair}: sequence probes, held-out accuracy / macro-F1 (train fit, test score; "
                              f"majority class {probes['chance'].max():.3f}):", probes, ["representation", "pooling"],
                              lambda r: f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}")
        sparse = pl.read_parquet(folder / "sparse.parquet")
        if len(sparse):
            lines += _pivot_lines(f"{pair}: k-sparse probes, held-out accuracy (top-k features by class separation; "
                                  f"{sparse['pooling'][0]} pooling):", sparse, ["representation", "k"],
                                  lambda r: f"{r['accuracy']:.3f}")
            ranked = pl.read_parquet(folder / "ranked.parquet").filter(
                pl.col("representation").str.starts_with("sae:") & (pl.col("rank") == 0))
            if len(ranked):
                lines += _pivot_lines(f"{pair}: the top-ranked SAE feature (id, class, top tokens):", ranked,
                                      ["representation"], lambda r: f"{r['feature']} {r['top_class']} "
                                      f"({', '.join((r['top_tokens'] or [])[:3])})")
        tokens = pl.read_parquet(folder / "tokens.parquet")
        if len(tokens):
            lines += _pivot_lines(f"{pair}: concept token probes, test AUROC / average precision:", tokens,
                                  ["representation", "concept"],
                                  lambda r: f"{r['auroc']:.3f} / {r['average_precision']:.3f}")
        scores_path = folder.parent / "clusters/scores.parquet"
        if not scores_path.exists():
            continue
        scores = pl.read_parquet(scores_path)
        lines += _pivot_lines(f"{pair}: k-means on test documents ({scores['pooling'][0]} pooling, "
                              f"{scores['n_clusters'][0]} clusters), ARI / purity / silhouette:", scores,
                              ["representation"], lambda r: f"{r['ari']:.3f} / {r['purity']:.3f} / {r['silhouette']:.3f}")
    return lines


def head_lines(root: Path, top: int = 5) -> list[str]:
    """The heads whose zero ablation costs most task loss in each variant, and the heads whose patterns
    changed most (heads_summary/changes.parquet)."""
    lines = []
    for path in sorted(root.glob("analysis/*/*/heads_summary/changes.parquet")):
        pair = f"{path.parent.parent.parent.name} / {path.parent.parent.name}"
        change = pl.read_parquet(path)
        n_docs = io.read_json(path.parent.parent / "heads/finetuned/heads.json")["n_docs"]
        modes = [m for m in ("zero", "mean") if f"task_{m}_delta_loss_pretrained" in change.columns]
        head = "| " + " | ".join(f"{v}: head (type), {modes[0]}-ablation task loss change"
                                 for v in ("pretrained", "finetuned")) + " |"
        lines += ["", f"{pair}: most important heads, in order ({n_docs} test documents; loss ablated - clean, "
                  f"other modes in brackets):", "", head, "|---|---|"]
        ranked = {v: change.sort(f"task_{modes[0]}_delta_loss_{v}", descending=True).head(top)
                  for v in ("pretrained", "finetuned")}
        for i in range(top):
            cells = []
            for v, table in ranked.items():
                r = table.row(i, named=True)
                others = ", ".join(f"{m} {r[f'task_{m}_delta_loss_{v}']:+.3f}" for m in modes[1:])
                cells.append(f"L{r['layer']}H{r['head']} ({r[f'type_{v}']}) {r[f'task_{modes[0]}_delta_loss_{v}']:+.3f}"
                             + (f" ({others})" if others else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"{pair}: heads whose attention patterns changed most (Jensen-Shannon distance):", "",
                  "| head | JS distance | type pre -> ft | task loss change pre / ft (zero ablation) |", "|---|---|---|---|"]
        for r in change.sort("js_distance", descending=True).head(top).iter_rows(named=True):
            lines.append(f"| L{r['layer']}H{r['head']} | {r['js_distance']:.3f} | {r['type_pretrained']} -> "
                         f"{r['type_finetuned']} | {fmt(r.get('task_zero_delta_loss_pretrained'))} / "
                         f"{fmt(r.get('task_zero_delta_loss_finetuned'))} |")
    return lines
