"""Stage `report`: one offline HTML site per study (`results/reports/`).

Per (model, dataset) a folder ``results/reports/<model>/<dataset>/`` with

- ``index.html``: accuracy before and after fine-tuning, per-layer similarity, the SAE
  quality table, planted concepts, the feature diff (categories by layer, transfer, the
  most changed features), probes and clusters, attention heads;
- ``feature.html`` and ``sentences.html`` with their lazily loaded data
  (`workflow.report_features`);
- ``img/`` (the analysis plots) and ``heads.html`` (the interactive attention patterns).

The study index ``results/reports/index.html`` links every page. Everything a page
shows is in the folder: nothing is fetched from the network, pages work from
``file://``, and the site can be copied away from the results it was made from.
Every table row that names a feature links to its feature page.
"""

from __future__ import annotations

import argparse
import html
import shutil
from pathlib import Path

import polars as pl

from workflow import io
from workflow.report_features import (describe_saes, feature_page, sae_key, sentence_page, write_feature_data,
                                      write_sentence_data)
from workflow.report_html import Raw, finite, link, rel, table
from workflow.report_html import page as html_page

SAE_COLUMNS = ["recipe", "architecture", "site", "layer", "variant", "d_sae", "FVU", "L0", "dead", "dense", "cosine",
               "task loss recovered", "accuracy clean / spliced", "KL", "LM loss recovered"]
VARIANTS = ("pretrained", "finetuned")


def accuracy_rows(metrics: dict, meta: dict, head: dict | None = None) -> list[list]:
    fitted = [["pretrained + fitted linear head", head["accuracy"], head["macro_f1"]]] if head else []
    return [
        ["pretrained (fresh head)", metrics["pretrained"]["accuracy"], metrics["pretrained"]["macro_f1"]],
        *fitted,
        ["fine-tuned", metrics["finetuned"]["accuracy"], metrics["finetuned"]["macro_f1"]],
        ["bag-of-words baseline", meta["bow_baseline"]["accuracy"], meta["bow_baseline"]["macro_f1"]],
    ]


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


class Site:
    """The report folder being written: copies plots into img/ and makes links relative to the page."""

    def __init__(self, root: Path, final: Path):
        self.root, self.final = root, final
        (root / "img").mkdir(parents=True, exist_ok=True)

    def image(self, path: str | Path, name: str, alt: str) -> str:
        path = Path(path)
        if not path.exists():
            return ""
        shutil.copyfile(path, self.root / "img" / name)
        return f'<img alt="{html.escape(alt)}" src="img/{html.escape(name)}">'

    def outside(self, target: str | Path) -> str:
        """Link to a results file outside the report folder (valid while the report sits in results/reports)."""
        return rel(target, self.final)


def _activation_links(site: Site, extracts: list[str]) -> str:
    items = []
    for path in extracts:
        summary, root = io.read_json(path), Path(path).parent
        variant, split = root.parent.parent.name, root.name
        links = ", ".join(f'<a href="{html.escape(site.outside(root / s))}">{html.escape(s)}</a>' for s in summary["sets"])
        items.append(f"<li>{html.escape(variant)} / {html.escape(split)}: {summary['n_tokens']} tokens: {links}</li>")
    return "".join(items)


def feature_link(key: str, feature, text=None) -> Raw:
    if feature is None or feature < 0:
        return Raw("n/a")
    return link(f"feature.html#sae={key}&f={feature}", f"f{feature}" if text is None else text)


def _accuracy_section(metrics: dict, meta: dict, head: dict | None) -> str:
    train = metrics["train"]
    return f"""<h2 id="accuracy">Accuracy on the test split</h2>
<p class=note>{meta['n_train']} train / {meta['n_test']} test documents; labels: {html.escape(', '.join(map(str, meta['label_names'])))}.
Fine-tuned for {train['epochs']} epoch(s), {train['steps']} steps, {train['tokens']} tokens in {train['seconds']:.0f} s
({train['tokens_per_s']:.0f} tokens/s) on {html.escape(metrics['device'])}.</p>
{table(["model", "accuracy", "macro-F1"], accuracy_rows(metrics, meta, head), "accuracy", 4)}
<p class=note>"Pretrained (fresh head)" is the pretrained body with a freshly initialised classification head, as in
the reference study; "fitted linear head" keeps the body frozen and fits the head by logistic regression on the
train split (a linear probe of what the pretrained model already offers); the bag-of-words logistic regression shows
how much of the task word counts alone solve.</p>"""


def _similarity_section(site: Site, similarity: str, plot: str) -> str:
    sim = pl.read_parquet(similarity)
    rows = sim.select("layer", "hook_name", "n_tokens", "mean_cosine", "token_cosine", "cka_debiased", "cka_biased",
                      "norm_ratio").rows()
    return f"""<h2 id="similarity">How much each layer changed</h2>
{site.image(plot, "similarity.png", "similarity by layer")}
{table(["layer", "hook", "tokens", "cos(mean)", "token cosine", "CKA (debiased)", "CKA (biased)", "norm ratio ft/pre"], rows, "similarity", 4)}
<p class=note>Residual stream after each block (layer 0 = embeddings), pretrained vs fine-tuned on the same tokens.
cos(mean): cosine of the mean activation vectors (the reference study's measure). Token cosine: mean over tokens
of the cosine between the two models' vectors. Linear CKA (Kornblith et al. 2019) with the debiased HSIC estimator
(Song et al. 2012) and with the biased one, which is inflated at small token counts. 1 = unchanged.</p>"""


def _sae_section(site: Site, sae_dirs: list[str]) -> str:
    if not sae_dirs:
        return '<h2 id="saes">Sparse autoencoders</h2><p class=note>No SAE recipe covers this dataset.</p>'
    rows = []
    for *row, folder in sae_rows([f"{d}/eval.json" for d in sae_dirs], with_folder=True):
        key = sae_key({"variant": row[4], "site": row[2], "layer": row[3], "sae": row[0]})
        rows.append([link(f"feature.html#sae={key}", row[0], "browse this SAE's features"), *row[1:],
                     link(site.outside(folder), "folder")])
    return f"""<h2 id="saes">Sparse autoencoders</h2>
{table(SAE_COLUMNS + ["files"], rows, "saes")}
<p class=note>Held-out test tokens. FVU: fraction of variance unexplained (1 - explained variance); L0: latents active
per token; dead: latents that never fire on these tokens; dense: latents firing on more than 10% of them. Task loss
recovered: (L_zero - L_spliced) / (L_zero - L_clean) for the variant's classifier with the SAE reconstruction spliced
in at that layer (pretrained: the pretrained body with a fitted linear head); KL: mean KL(clean || spliced) of the
class distributions. The recipe links to the SAE's features; each folder loads in SAELens
(<code>SAE.load_from_disk</code>).</p>"""


def _concept_section(saes: list[dict]) -> str:
    concepts = sorted({c for s in saes for c in s["concepts"]})
    if not concepts:
        return ""
    rows = []
    for s in saes:
        best = io.read_json(Path(s["folder"]) / "features.json")["best_feature_per_concept"]
        cells = []
        for c in concepts:
            b = best.get(c)
            cells.append(Raw("n/a") if not b else
                         Raw(f"{feature_link(s['key'], b['feature'])} {b['f1']:.3f} "
                             f"<span class=note>({b['precise_features']} precise, union recall "
                             f"{b['precise_union_recall']:.2f})</span>"))
        rows.append([s["recipe"], s["site"], s["layer"], s["variant"], *cells])
    return f"""<h2 id="concepts">Planted concepts</h2>
{table(["recipe", "site", "layer", "variant", *concepts], rows, "concepts")}
<p class=note>Per SAE, the single feature that best detects each planted concept ("fires" as the detector, F1 over
test tokens), how many features reach precision 0.8 for it and the recall of their union (a concept split over
several features).</p>"""


def _diff_section(site: Site, diff_dirs: list[str], summary_dirs: list[str], saes: list[dict]) -> str:
    if not diff_dirs:
        return ""
    keys = {(s["recipe"], s["site"], s["layer"], s["variant"]): s["key"] for s in saes}
    parts = ['<h2 id="diff">What fine-tuning did to the features</h2>']
    for folder in sorted(summary_dirs):
        recipe = Path(folder).name
        parts.append(f"<h3>Recipe {html.escape(recipe)}</h3><div class=figs>"
                     + site.image(Path(folder) / "categories.png", f"diff-{recipe}-categories.png", "feature categories by layer")
                     + site.image(Path(folder) / "transfer.png", f"diff-{recipe}-transfer.png", "SAE transfer by layer")
                     + site.image(Path(folder) / "decoder_cosine.png", f"diff-{recipe}-decoder_cosine.png", "matched decoder cosines") + "</div>")
    cat_rows, transfer_rows, changed_tables = [], [], []
    for folder in sorted(diff_dirs, key=lambda d: (Path(d).name, Path(d).parent.parent.name, int(Path(d).parent.name[1:]))):
        d = io.read_json(Path(folder) / "diff.json")
        recipe = Path(folder).name
        pre, ft = d["categories"]["pretrained"]["counts"], d["categories"]["finetuned"]["counts"]
        cat_rows.append([recipe, d["site"], d["layer"], pre.get("retained", 0), pre.get("drifted", 0),
                         pre.get("overwritten", 0), pre.get("dead", 0), ft.get("new", 0), ft.get("dead", 0),
                         d["matched_cosine_median"]])
        t = {(r["sae"], r["activations"]): r for r in d["transfer"]}
        cells = []
        for sae, acts in (("pretrained", "pretrained"), ("finetuned", "finetuned"), ("pretrained", "finetuned"),
                          ("finetuned", "pretrained")):
            r = t.get((sae, acts), {})
            cells += [r.get("explained_variance"), r.get("task_loss_recovered")]
        transfer_rows.append([recipe, d["site"], d["layer"], *cells])
        changed = pl.read_parquet(Path(folder) / "changed.parquet")
        pre_key, ft_key = (keys.get((recipe, d["site"], d["layer"], v)) for v in VARIANTS)
        changed_rows = []
        for r in changed.iter_rows(named=True):
            changed_rows.append([recipe, d["layer"], Raw(f'<span class="pill {r["kind"]}">{r["kind"]}</span>'),
                                 feature_link(pre_key, r["pretrained_feature"]), feature_link(ft_key, r["finetuned_feature"]),
                                 r["decoder_cos"], r["act_corr"], r["delta_frequency"],
                                 " ".join((r["pretrained_top_tokens"] or [])[:4]), " ".join((r["finetuned_top_tokens"] or [])[:4])])
        changed_tables.append(
            f"<details{' open' if not changed_tables else ''}><summary>{html.escape(recipe)} {html.escape(d['site'])} "
            f"L{d['layer']}: {len(changed_rows)} features</summary>"
            + table(["recipe", "layer", "kind", "pretrained", "fine-tuned", "decoder cos", "act. corr.", "Δ frequency",
                     "pretrained top tokens", "fine-tuned top tokens"], changed_rows, "changed") + "</details>")
    parts.append(table(["recipe", "site", "layer", "retained", "drifted", "overwritten", "dead (pre)", "new", "dead (ft)",
                        "median matched cosine"], cat_rows, "diff-categories"))
    parts.append("""<p class=note>Features counted per SAE (pretrained: retained / drifted / overwritten / dead;
fine-tuned: new / dead, its retained and drifted pair with the pretrained ones). Features are matched by decoder
cosine (Hungarian matching); a matched pair with cosine at or above the match threshold is the same feature:
retained when it also fires on the same tokens (activation correlation), else drifted. Unmatched pretrained features
are overwritten, unmatched fine-tuned ones new.</p><h3>Does the pretrained SAE still fit the fine-tuned model?</h3>""")
    parts.append(table(["recipe", "site", "layer", "EV pre SAE on pre", "task rec.", "EV ft SAE on ft", "task rec.",
                        "EV pre SAE on ft", "task rec.", "EV ft SAE on pre", "task rec."], transfer_rows, "transfer"))
    parts.append("""<p class=note>Explained variance of each SAE on each model's activations (test tokens) and the
task loss recovered with the reconstruction spliced into the activations' own classifier.</p>
<h3 id="changed">Most changed features</h3>""")
    parts += changed_tables
    parts.append("<p class=note>Links open the feature page with the matched pair side by side.</p>")
    return "\n".join(parts)


def _pivot(frame: pl.DataFrame, keys: list[str], value, cls: str, link_of=None) -> str:
    """One row per distinct `keys`, one column per (site, layer, variant)."""
    columns = sorted(frame.select("site", "layer", "variant").unique().rows(),
                     key=lambda c: (c[0], c[1], c[2] != "pretrained"))
    multi_site = len({c[0] for c in columns}) > 1
    names = [f"L{l} {v[:3]}" + (f" {s}" if multi_site else "") for s, l, v in columns]
    cells: dict[tuple, dict] = {}
    for row in frame.iter_rows(named=True):
        cells.setdefault(tuple(row[k] for k in keys), {})[(row["site"], row["layer"], row["variant"])] = value(row)
    rows = [[*key, *(by.get(c, "") for c in columns)] for key, by in cells.items()]
    return table([*keys, *names], rows, cls)


def _probe_section(site: Site, probe_dir: str | None, cluster_dir: str | None, saes: list[dict]) -> str:
    if not probe_dir:
        return ""
    folder = Path(probe_dir)
    keys = {(f"sae:{s['recipe']}", s["site"], s["layer"], s["variant"]): s["key"] for s in saes}
    probes = pl.read_parquet(folder / "probes.parquet")
    parts = ['<h2 id="probes">Probes and clusters</h2>',
             site.image(folder / "probe_accuracy.png", "probe_accuracy.png", "probe accuracy by layer"),
             f"<h3>Sequence probes: held-out accuracy / macro-F1 (majority class {probes['chance'].max():.3f})</h3>",
             _pivot(probes, ["representation", "pooling"], lambda r: f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}", "probes"),
             """<p class=note>L2 logistic regression on pooled documents, C chosen by stratified CV inside the train
split, scored on the test split. raw: the residual stream; sae:&lt;recipe&gt;: that SAE's latents.</p>"""]
    sparse = pl.read_parquet(folder / "sparse.parquet")
    if len(sparse):
        parts += [site.image(folder / "sparse.png", "sparse.png", "k-sparse probe accuracy"),
                  f"<h3>k-sparse probes: held-out accuracy of the top-k features ({sparse['pooling'][0]} pooling)</h3>",
                  _pivot(sparse, ["representation", "k"], lambda r: f"{r['accuracy']:.3f}", "sparse")]
        ranked = pl.read_parquet(folder / "ranked.parquet").filter(pl.col("representation").str.starts_with("sae:")
                                                                   & (pl.col("rank") < 5))
        rows = []
        for r in ranked.sort("representation", "site", "layer", "variant", "rank").iter_rows(named=True):
            key = keys.get((r["representation"], r["site"], r["layer"], r["variant"]))
            rows.append([r["representation"], r["layer"], r["variant"], r["rank"] + 1,
                         feature_link(key, r["feature"]) if key else r["feature"], r["top_class"], r["f_score"],
                         " ".join((r["top_tokens"] or [])[:5])])
        if rows:
            parts += ["<h3>The features the sparse probes pick first</h3>",
                      table(["representation", "layer", "variant", "rank", "feature", "class", "ANOVA F", "top tokens"],
                            rows, "ranked", 1)]
    tokens = pl.read_parquet(folder / "tokens.parquet")
    if len(tokens):
        parts += ["<h3>Concept token probes: test AUROC / average precision</h3>",
                  _pivot(tokens, ["representation", "concept"], lambda r: f"{r['auroc']:.3f} / {r['average_precision']:.3f}",
                         "token-probes")]
    if cluster_dir:
        scores = pl.read_parquet(Path(cluster_dir) / "scores.parquet")
        parts += [f"<h3>k-means on test documents ({scores['pooling'][0]} pooling, {scores['n_clusters'][0]} clusters):"
                  " ARI / purity / silhouette</h3>",
                  _pivot(scores, ["representation"], lambda r: f"{r['ari']:.3f} / {r['purity']:.3f} / {r['silhouette']:.3f}",
                         "clusters"),
                  site.image(Path(cluster_dir) / "clusters.png", "clusters.png", "clusters"),
                  _cluster_details(Path(cluster_dir) / "clusters.parquet", keys)]
    return "\n".join(parts)


def _cluster_details(path: Path, keys: dict) -> str:
    """Each cluster of the SAE representations: size, majority class, the features that lift it most (linked)."""
    clusters = pl.read_parquet(path).filter(pl.col("representation").str.starts_with("sae:"))
    rows = []
    for r in clusters.sort("representation", "site", "layer", "variant", "cluster").iter_rows(named=True):
        key = keys.get((r["representation"], r["site"], r["layer"], r["variant"]))
        links = " ".join(str(feature_link(key, f) if key else f) for f in r["top_features"] or [])
        rows.append([r["representation"], r["layer"], r["variant"], r["cluster"], r["size"],
                     f"{r['majority']} ({r['majority_share']:.2f})", Raw(links), (r["nearest_texts"] or [""])[0]])
    if not rows:
        return ""
    return ("<details><summary>Clusters of the SAE latents: size, majority class, the features most above their mean "
            "in the cluster, and the document nearest its centre</summary>"
            + table(["representation", "layer", "variant", "cluster", "documents", "majority class", "top features",
                     "nearest document"], rows, "cluster-details") + "</details>")


def _heads_section(site: Site, heads_dir: str | None, top: int = 8) -> str:
    if not heads_dir:
        return ""
    folder = Path(heads_dir)
    shutil.copyfile(folder / "patterns.html", site.root / "heads.html")
    change = pl.read_parquet(folder / "changes.parquet")
    modes = [m for m in ("zero", "mean") if f"task_{m}_delta_loss_pretrained" in change.columns]

    def head_link(r) -> Raw:
        return link(f"heads.html#layer={r['layer']}&head={r['head']}", f"L{r['layer']}H{r['head']}", "attention patterns")

    rows = []
    ranked = {v: change.sort(f"task_{modes[0]}_delta_loss_{v}", descending=True).head(top).rows(named=True) for v in VARIANTS}
    for i in range(min(top, len(change))):
        row = [i + 1]
        for v in VARIANTS:
            r = ranked[v][i]
            row += [head_link(r), r[f"type_{v}"], *(r[f"task_{m}_delta_loss_{v}"] for m in modes)]
        rows.append(row)
    per_variant = ["head", "type", *(f"{m} abl. Δloss" for m in modes)]
    changed = [[head_link(r), r["js_distance"], r["type_pretrained"], r["type_finetuned"],
                *(r[f"task_{m}_delta_loss_{v}"] for m in modes for v in VARIANTS)]
               for r in change.sort("js_distance", descending=True).head(top).iter_rows(named=True)]
    return f"""<h2 id="heads">Attention heads</h2>
<p><a href="heads.html">Interactive attention patterns</a>: pick a head, hover a token, both models side by side.</p>
{site.image(folder / "ablation.png", "heads_ablation.png", "head ablation effects")}
<h3>Most important heads (task loss change when ablated; pretrained left, fine-tuned right)</h3>
{table(["rank", *(f"pre {c}" for c in per_variant), *(f"ft {c}" for c in per_variant)], rows, "heads-important")}
{site.image(folder / "pattern_change.png", "heads_pattern_change.png", "attention pattern change")}
<h3>Heads whose attention changed most (Jensen-Shannon distance on the same tokens)</h3>
{table(["head", "JS distance", "type pre", "type ft", *(f"{m} abl. Δloss {v[:3]}" for m in modes for v in VARIANTS)], changed, "heads-changed")}
<p class=note>Zero ablation sets the head's output to zero, mean ablation to its mean over the documents' tokens; Δloss
is ablated minus clean test cross-entropy of the variant's classifier (pretrained: frozen body and fitted linear
head).</p>"""


def page(model: str, dataset: str, paths: dict, out_dir: str) -> None:
    """Write the report folder of one (model, dataset); `paths` names its inputs (see `main`)."""
    meta, metrics = io.read_json(paths["meta"]), io.read_json(paths["metrics"])
    head = io.read_json(paths["head"]) if paths.get("head") else None
    saes = describe_saes(paths.get("saes") or [])
    diffs = {(Path(d).name, Path(d).parent.parent.name, int(Path(d).parent.name[1:])): pl.read_parquet(Path(d) / "diff.parquet")
             for d in paths.get("diffs") or []}
    title = f"{model} fine-tuned on {dataset}"
    final = Path(out_dir)
    with io.atomic_dir(final) as tmp:
        site = Site(tmp, final)
        nav = ['<a href="#accuracy">accuracy</a>', '<a href="#similarity">similarity</a>', '<a href="#saes">SAEs</a>']
        if saes:
            write_feature_data(saes, diffs, tmp)
            write_sentence_data(saes, tmp)
            (tmp / "feature.html").write_text(feature_page(saes, title), encoding="utf-8")
            (tmp / "sentences.html").write_text(sentence_page(saes, title), encoding="utf-8")
            nav += ['<a href="feature.html">feature pages</a>', '<a href="sentences.html">sentence view</a>']
        sections = [_accuracy_section(metrics, meta, head), _similarity_section(site, paths["similarity"], paths["plot"]),
                    _sae_section(site, paths.get("saes") or []), _concept_section(saes),
                    _diff_section(site, paths.get("diffs") or [], paths.get("diff_summaries") or [], saes),
                    _probe_section(site, paths.get("probe_summary"), paths.get("clusters"), saes),
                    _heads_section(site, paths.get("heads_summary"))]
        for anchor, name in (("concepts", "concepts"), ("diff", "feature diff"), ("probes", "probes"), ("heads", "heads")):
            if any(f'id="{anchor}"' in s for s in sections):
                nav.append(f'<a href="#{anchor}">{name}</a>')
        artifacts = f"""<h2 id="files">Files</h2><ul>
<li><a href="{site.outside(paths['metrics'])}">metrics.json</a> and the fine-tuned model folder
<a href="{site.outside(Path(paths['metrics']).parent)}">{html.escape(str(Path(paths['metrics']).parent))}</a></li>
<li><a href="{site.outside(paths['similarity'])}">similarity.parquet</a>, <a href="{site.outside(paths['meta'])}">dataset metadata</a></li>
</ul><h3>Activation sets</h3><ul>{_activation_links(site, paths.get("extracts") or [])}</ul>
<p class=note>These links point into results/ beside this folder.</p>"""
        body = (f'<p><a href="../../index.html">&larr; study index</a></p><h1>{html.escape(title)}</h1>'
                f'<nav class="toc">{" ".join(nav)}</nav>' + "\n".join(sections) + artifacts)
        (tmp / "index.html").write_text(html_page(f"{model} / {dataset}", body), encoding="utf-8")
        io.write_json(summary_numbers(model, dataset, metrics, paths, saes), tmp / "summary.json")


def summary_numbers(model: str, dataset: str, metrics: dict, paths: dict, saes: list[dict]) -> dict:
    """The few numbers the study index shows for this (model, dataset)."""
    last = pl.read_parquet(paths["similarity"]).sort("layer").row(-1, named=True)
    kept = live = 0
    for folder in paths.get("diffs") or []:
        counts = io.read_json(Path(folder) / "diff.json")["categories"]["pretrained"]["counts"]
        kept += counts.get("retained", 0) + counts.get("drifted", 0)
        live += sum(counts.values()) - counts.get("dead", 0)
    best_probe = None
    if paths.get("probe_summary"):
        probes = pl.read_parquet(Path(paths["probe_summary"]) / "probes.parquet").filter(pl.col("variant") == "finetuned")
        best_probe = finite(probes["accuracy"].max()) if len(probes) else None
    return {"model": model, "dataset": dataset, "accuracy_pretrained": metrics["pretrained"]["accuracy"],
            "accuracy_finetuned": metrics["finetuned"]["accuracy"], "last_layer_cka": finite(last["cka_debiased"]),
            "last_layer_mean_cosine": finite(last["mean_cosine"]), "n_saes": len(saes),
            "retained_fraction": kept / live if live else None, "best_probe": best_probe}


def index(pages: list[str], out: str) -> None:
    """The study index: one row per (model, dataset) report folder, read back from the folders' summary.json."""
    rows = []
    for folder in pages:
        s = io.read_json(Path(folder) / "summary.json")
        base = rel(folder, Path(out).parent)
        links = [link(f"{base}/index.html", "report")]
        if s["n_saes"]:
            links += [link(f"{base}/feature.html", "features"), link(f"{base}/sentences.html", "sentences")]
        plot = Raw(f'<a href="{html.escape(base)}/index.html#similarity"><img class=thumb alt="similarity by layer" '
                   f'src="{html.escape(base)}/img/similarity.png"></a>')
        rows.append([Raw(f"{html.escape(s['model'])} / {html.escape(s['dataset'])}"), plot, s["accuracy_pretrained"],
                     s["accuracy_finetuned"], s["last_layer_cka"], s["last_layer_mean_cosine"], s["n_saes"],
                     s["retained_fraction"], s["best_probe"], Raw(" · ".join(links))])
    header = ["model / dataset", "similarity by layer", "accuracy pretrained", "accuracy fine-tuned", "last-layer CKA (debiased)",
              "last-layer cos(mean)", "SAEs", "pretrained features retained or drifted", "best probe accuracy", "pages"]
    body = ("<h1>What fine-tuning changed: study index</h1>" + table(header, rows, "index")
            + "<p class=note>Retained or drifted: share of live pretrained SAE features that the fine-tuned SAE still has "
              "(all recipes and layers). Best probe: the highest held-out sequence-probe accuracy over layers and "
              "representations of the fine-tuned model.</p>")
    with io.atomic_path(out) as tmp:
        tmp.write_text(html_page("study index", body), encoding="utf-8")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow report", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("page", help="the report folder of one (model, dataset)")
    for name in ("model", "dataset", "meta", "metrics", "similarity", "plot", "out-dir"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--head", help="metrics.json of the pretrained model's fitted linear head")
    p.add_argument("--extracts", nargs="*", default=[], help="extract.json of each variant and split")
    p.add_argument("--saes", nargs="*", default=[], help="SAE folders (eval.json, features.*, examples, sentences)")
    p.add_argument("--diffs", nargs="*", default=[], help="diff folders (diff.json, diff.parquet, changed.parquet)")
    p.add_argument("--diff-summaries", nargs="*", default=[], help="diff_summary folders, one per recipe")
    p.add_argument("--probe-summary", help="probe_summary folder")
    p.add_argument("--clusters", help="clusters folder")
    p.add_argument("--heads-summary", help="heads_summary folder")
    i = sub.add_parser("index", help="the study index")
    i.add_argument("--pages", nargs="+", required=True, help="report folders")
    i.add_argument("--out", required=True)
    m = sub.add_parser("summary", help="print the README's markdown tables for a finished study")
    m.add_argument("--results", default="results")
    args = parser.parse_args(argv)
    if args.what == "summary":
        from workflow.report_summary import summary

        print(summary(args.results))
    elif args.what == "page":
        paths = {k: getattr(args, k) for k in ("meta", "metrics", "similarity", "plot", "head", "extracts", "saes", "diffs",
                                               "diff_summaries", "probe_summary", "clusters", "heads_summary")}
        page(args.model, args.dataset, paths, args.out_dir)
    else:
        index(args.pages, args.out)
