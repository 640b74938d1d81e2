"""Stage `report`: a first HTML page per (model, dataset) and a study index.

Each page shows accuracy and macro-F1 before and after fine-tuning (with the
bag-of-words baseline for scale), the per-layer similarity plot and table, and
links to the artifacts. Pages are self-contained (the plot is embedded) and
work from ``file://`` without network access.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import os
from pathlib import Path

import polars as pl

from workflow import io

STYLE = """
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.note{color:#555;font-size:.9rem}
"""


def _fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else html.escape(str(x))


def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>{body}</body></html>\n")


def _rel(target: str, start_file: str) -> str:
    return html.escape(os.path.relpath(target, Path(start_file).parent))


def accuracy_rows(metrics: dict, meta: dict, head: dict | None = None) -> list[list]:
    fitted = [["pretrained + fitted linear head", head["accuracy"], head["macro_f1"]]] if head else []
    return [
        ["pretrained (fresh head)", metrics["pretrained"]["accuracy"], metrics["pretrained"]["macro_f1"]],
        *fitted,
        ["fine-tuned", metrics["finetuned"]["accuracy"], metrics["finetuned"]["macro_f1"]],
        ["bag-of-words baseline", meta["bow_baseline"]["accuracy"], meta["bow_baseline"]["macro_f1"]],
    ]


def _activation_links(extracts: list[str], out: str) -> str:
    items = []
    for path in extracts:
        summary, root = io.read_json(path), Path(path).parent
        variant, split = root.parent.parent.name, root.name
        links = ", ".join(f'<a href="{_rel(str(root / s), out)}">{html.escape(s)}</a>' for s in summary["sets"])
        items.append(f"<li>{html.escape(variant)} / {html.escape(split)}: {summary['n_tokens']} tokens: {links}</li>")
    return "".join(items)


SAE_COLUMNS = ["recipe", "architecture", "site", "layer", "variant", "d_sae", "FVU", "L0", "dead", "dense", "cosine",
               "task loss recovered", "accuracy clean / spliced", "KL", "LM loss recovered"]


def sae_rows(evals: list[str], with_folder: bool = False) -> list[list]:
    """One row per SAE eval.json, ordered by recipe, site, layer, variant (the folder appended if asked)."""
    rows = []
    for path in evals:
        e = io.read_json(path)
        task, lm = e["downstream"]["task"], e["downstream"].get("lm")
        rows.append([e["sae"], e["architecture"], e["site"], e["layer"], e["variant"], e["d_sae"], e["fvu"], e["l0"],
                     e["dead_fraction"], e["dense_fraction"], e["cosine"], task["loss_recovered"],
                     f"{task['accuracy_clean']:.3f} / {task['accuracy_spliced']:.3f}", task["kl"],
                     lm["loss_recovered"] if lm else None] + ([str(Path(path).parent)] if with_folder else []))
    order = {"pretrained": 0, "finetuned": 1}
    return sorted(rows, key=lambda r: (r[0], r[2], r[3], order.get(r[4], 2)))


def _sae_section(evals: list[str], out: str) -> str:
    if not evals:
        return "<h2>Sparse autoencoders</h2><p class=note>No SAE recipe covers this dataset.</p>"
    cells = []
    for *row, folder in sae_rows(evals, with_folder=True):
        name = f'<a href="{_rel(folder, out)}">{html.escape(row[0])}</a>'
        cells.append("<tr>" + "".join(f"<td>{name if i == 0 else _fmt(v)}</td>" for i, v in enumerate(row)) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in SAE_COLUMNS)
    return f"""<h2>Sparse autoencoders</h2>
<table class="saes"><thead><tr>{head}</tr></thead><tbody>{"".join(cells)}</tbody></table>
<p class=note>Held-out test tokens. FVU: fraction of variance unexplained (1 - explained variance); L0: latents active
per token; dead: latents that never fire on these tokens; dense: latents firing on more than 10% of them. Task loss
recovered: (L_zero - L_spliced) / (L_zero - L_clean) for the variant's classifier with the SAE reconstruction spliced
in at that layer (pretrained: the pretrained body with a fitted linear head); KL: mean KL(clean || spliced) of the
class distributions. Each SAE folder loads in SAELens (<code>SAE.load_from_disk</code>).</p>"""


def page(model: str, dataset: str, meta_path: str, metrics_path: str, similarity_path: str, plot_path: str,
         extracts: list[str], out: str, head_path: str | None = None, evals: list[str] | None = None) -> None:
    meta, metrics = io.read_json(meta_path), io.read_json(metrics_path)
    head = io.read_json(head_path) if head_path else None
    sim = pl.read_parquet(similarity_path)
    plot = base64.b64encode(Path(plot_path).read_bytes()).decode()
    train = metrics["train"]
    sim_rows = sim.select("layer", "hook_name", "n_tokens", "mean_cosine", "token_cosine", "cka_debiased",
                          "cka_biased", "norm_ratio").rows()
    body = f"""
<p><a href="../../index.html">&larr; study index</a></p>
<h1>{html.escape(model)} fine-tuned on {html.escape(dataset)}</h1>
<p class=note>{meta['n_train']} train / {meta['n_test']} test documents; labels: {html.escape(', '.join(map(str, meta['label_names'])))}.
Fine-tuned for {train['epochs']} epoch(s), {train['steps']} steps, {train['tokens']} tokens
in {train['seconds']:.0f} s ({train['tokens_per_s']:.0f} tokens/s) on {html.escape(metrics['device'])}.</p>
<h2>Accuracy on the test split</h2>
{_table(["model", "accuracy", "macro-F1"], accuracy_rows(metrics, meta, head), "accuracy")}
<p class=note>"Pretrained (fresh head)" is the pretrained body with a freshly initialised classification head, as in
the reference study; "fitted linear head" keeps the body frozen and fits the head by logistic regression on the
train split (a linear probe of what the pretrained model already offers); the bag-of-words logistic regression shows how much of the task word counts alone solve.</p>
<h2>How much each layer changed</h2>
<img alt="similarity by layer" src="data:image/png;base64,{plot}">
{_table(["layer", "hook", "tokens", "cos(mean)", "token cosine", "CKA (debiased)", "CKA (biased)", "norm ratio ft/pre"], sim_rows, "similarity")}
<p class=note>Residual stream after each block (layer 0 = embeddings), pretrained vs fine-tuned on the same tokens.
cos(mean): cosine of the mean activation vectors (the reference study's measure). Token cosine: mean over tokens
of the cosine between the two models' vectors. Linear CKA (Kornblith et al. 2019) with the debiased HSIC estimator
(Song et al. 2012) and with the biased one, which is inflated at small token counts. 1 = unchanged.</p>
{_sae_section(evals or [], out)}
<h2>Artifacts</h2>
<ul>
<li><a href="{_rel(metrics_path, out)}">metrics.json</a> and the fine-tuned model folder
<a href="{_rel(str(Path(metrics_path).parent), out)}">{html.escape(str(Path(metrics_path).parent))}</a></li>
<li><a href="{_rel(similarity_path, out)}">similarity.parquet</a></li>
<li><a href="{_rel(meta_path, out)}">dataset metadata</a></li>
</ul>
<h3>Activation sets</h3>
<ul>{_activation_links(extracts, out)}</ul>
"""
    with io.atomic_path(out) as tmp:
        tmp.write_text(_page(f"{model} / {dataset}", body))


def index(pages: list[str], metrics_paths: list[str], similarity_paths: list[str], out: str) -> None:
    rows = []
    for page_path, metrics_path, sim_path in zip(pages, metrics_paths, similarity_paths):
        model, dataset = Path(page_path).parent.parent.name, Path(page_path).parent.name
        metrics = io.read_json(metrics_path)
        sim = pl.read_parquet(sim_path).sort("layer")
        last = sim.row(-1, named=True)
        link = f'<a href="{_rel(page_path, out)}">{html.escape(model)} / {html.escape(dataset)}</a>'
        rows.append((link, metrics["pretrained"]["accuracy"], metrics["finetuned"]["accuracy"],
                     last["cka_debiased"], last["mean_cosine"]))
    head = ["model / dataset", "accuracy pretrained", "accuracy fine-tuned", "last-layer CKA (debiased)", "last-layer cos(mean)"]
    body_rows = "".join(
        f"<tr><td>{r[0]}</td>" + "".join(f"<td>{_fmt(v)}</td>" for v in r[1:]) + "</tr>" for r in rows
    )
    thead = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = (f"<h1>What fine-tuning changed: study index</h1>"
            f'<table class="index"><thead><tr>{thead}</tr></thead><tbody>{body_rows}</tbody></table>')
    with io.atomic_path(out) as tmp:
        tmp.write_text(_page("study index", body))


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
                lines.append(f"| {pair} | " + " | ".join(_fmt(v, 3) for v in row) + " |")
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
                         + " | ".join(_fmt(cells.get(c), 3) for c in columns) + " |")
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
            f"| {_fmt(ff['task_loss_recovered'], 3)} / {_fmt(pf['task_loss_recovered'], 3)} "
            f"| {_fmt(pp['task_loss_recovered'], 3)} / {_fmt(fp['task_loss_recovered'], 3)} |")
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
                         f"{r['type_finetuned']} | {_fmt(r.get('task_zero_delta_loss_pretrained'), 3)} / "
                         f"{_fmt(r.get('task_zero_delta_loss_finetuned'), 3)} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("page", help="one (model, dataset) page")
    for name in ("model", "dataset", "meta", "metrics", "similarity", "plot", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--extracts", nargs="+", required=True, help="extract.json of each variant and split")
    p.add_argument("--head", help="metrics.json of the pretrained model's fitted linear head")
    p.add_argument("--evals", nargs="*", default=[], help="eval.json of each SAE of this (model, dataset)")
    i = sub.add_parser("index", help="the study index")
    for name in ("pages", "metrics", "similarity"):
        i.add_argument(f"--{name}", nargs="+", required=True)
    i.add_argument("--out", required=True)
    m = sub.add_parser("summary", help="print the README's markdown tables for a finished study")
    m.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    if args.what == "summary":
        print(summary(args.results))
    elif args.what == "page":
        page(args.model, args.dataset, args.meta, args.metrics, args.similarity, args.plot, args.extracts, args.out,
             args.head, args.evals)
    else:
        index(args.pages, args.metrics, args.similarity, args.out)
