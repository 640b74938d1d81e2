"""Stage `kmeans`: how do documents group, in raw activations and in SAE latents?

Per (model, dataset): one job covers every (variant, site, layer) in the probe
scope (k-means on a few hundred documents is quick; one job saves the start-up
of many), on the test split. Each document
is pooled to one vector (``pooling``: the mean over its tokens, or the token
its classifier reads; `workflow.analysis.pooling`) of the raw activations (``raw``) and
of each SAE's latents (``sae:<recipe>``). Rows are L2-normalised when
``normalize`` is set (k-means on directions, i.e. spherical k-means, which
ignores the large shared norm of transformer activations), then clustered by
scikit-learn's `KMeans` (``n_clusters``, default the number of classes,
``n_init`` restarts, seeded). Labels are never used to cluster; they only
score the result:

- ``purity``: the share of documents in their cluster's majority class;
- ``ari``: adjusted Rand index against the labels (0 for chance, 1 for the
  labels exactly); ``nmi``: normalised mutual information;
- ``silhouette``: the mean silhouette in the clustered space (cohesion vs
  separation, label-free).

Per cluster (`clusters.parquet`): its size, class counts and majority class,
the ``n_nearest`` documents nearest its centre (ids and texts), and its
``n_top_features`` top features: the largest gains of the cluster's mean
pooled activation over the mean of all documents (for SAE latents with their
top tokens from the `features` table). Outputs: ``scores.parquet`` (one row per
variant, site, layer and representation), ``clusters.parquet`` (one row per
cluster) and ``clusters.png`` (class composition bars, with the ARI).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.kmeans import cluster_rows, kmeans, scores
from workflow.analysis.pooling import pool_set
from workflow.models.families import family
from workflow.report.figures.canvas import pyplot, save
from workflow.runner import cli
from workflow.sae import load
from workflow.store.activations import ActivationSet
from workflow.store.files import atomic_dir, read_json, write_json
from workflow.store.tables import feature_top_tokens
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


def _top_tokens(sae_dir: str | None) -> dict[int, list[str]]:
    table = feature_top_tokens(sae_dir)
    return {} if table is None else dict(zip(table["feature"].to_list(), table["top_tokens"].to_list()))


def _representations(aset: ActivationSet, docs, position: str, pooling: str, sae_dirs: dict, batch_rows: int) -> dict:
    """{representation: (n_docs, d) pooled documents}: raw activations, then each SAE's latents."""
    reps = {"raw": pool_set(aset, docs.offsets, position, None, batch_rows).get(pooling)}
    for name, folder in sae_dirs.items():
        sae = load(folder)
        if sae.d_in != aset.d_model:
            raise ValueError(f"{folder}: d_in {sae.d_in} does not match {aset.folder}'s d_model {aset.d_model}")
        reps[f"sae:{name}"] = pool_set(aset, docs.offsets, position, sae, batch_rows).get(pooling)
    return reps


def cluster_set(
    acts_dir: str,
    docs,
    labels: np.ndarray,
    doc_ids: np.ndarray,
    texts: list[str],
    label_names: list[str],
    family_name: str,
    sae_dirs: dict[str, str],
    cfg: dict,
) -> tuple[list[dict], list[dict]]:
    """Scores and cluster rows of one activation set, raw and through each SAE, tagged with the set's
    variant, site and layer (from its manifest)."""
    position = family(family_name).pooled
    pooling = position if cfg["pooling"] == "position" else "mean"
    n_clusters = cfg["n_clusters"] or len(label_names)
    aset = ActivationSet(acts_dir)
    where = {k: aset.manifest[k] for k in ("variant", "site", "layer")}
    score_rows, cluster_table = [], []
    for rep, x in _representations(aset, docs, position, pooling, sae_dirs, cfg["batch_rows"]).items():
        assign, centres, z = kmeans(x, n_clusters, cfg["normalize"], cfg["n_init"], cfg["seed"])
        result = scores(z, assign, labels)
        score_rows.append({**where, "representation": rep, "pooling": pooling, "n_clusters": n_clusters, **result})
        log.info(
            "%s %-12s k-means (%d clusters): purity %.3f ARI %.3f NMI %.3f silhouette %.3f",
            acts_dir,
            rep,
            n_clusters,
            result["purity"],
            result["ari"],
            result["nmi"],
            result["silhouette"],
        )
        tokens_of = _top_tokens(sae_dirs.get(rep.partition(":")[2])) if rep != "raw" else {}
        for row in cluster_rows(
            x, z, assign, centres, labels, label_names, doc_ids, texts, cfg["n_nearest"], cfg["n_top_features"]
        ):
            row["top_feature_tokens"] = [", ".join(tokens_of.get(f) or []) for f in row["top_features"]]
            cluster_table.append({**where, "representation": rep, "pooling": pooling, **row})
    return score_rows, cluster_table


def _documents(tokens_path: str, data_path: str):
    """The test documents, their ids and their texts."""
    docs = read_documents(tokens_path)
    doc_ids = docs.doc_ids
    data = pl.read_parquet(data_path, columns=["id", "text"])
    text_of = dict(zip(data["id"].to_list(), data["text"].to_list()))
    missing = [int(i) for i in doc_ids if int(i) not in text_of]
    if missing:
        raise ValueError(f"{data_path}: no text for document ids {missing[:5]} of {tokens_path}")
    return docs, doc_ids, [text_of[int(i)] for i in doc_ids]


def run(
    plan: list[dict],
    tokens_path: str,
    data_path: str,
    meta_path: str,
    family_name: str,
    cfg: dict,
    out_dir: str,
    title: str = "",
) -> dict:
    """plan: [{"acts": test activation set, "saes": {recipe: SAE folder}}, ...]."""
    started = time.perf_counter()
    label_names = read_json(meta_path)["label_names"]
    docs, doc_ids, texts = _documents(tokens_path, data_path)
    labels = docs.labels.astype(np.int64)
    all_scores, all_clusters = [], []
    for entry in plan:
        score_rows, cluster_table = cluster_set(
            entry["acts"], docs, labels, doc_ids, texts, label_names, family_name, entry.get("saes") or {}, cfg
        )
        all_scores += score_rows
        all_clusters += cluster_table
    # one order whatever the plan's: by variant, site and layer, as the probe summary sorts its tables
    where = lambda row: (row["variant"], row["site"], row["layer"])  # noqa: E731
    all_scores.sort(key=where)
    all_clusters.sort(key=where)
    score_table, cluster_table = pl.DataFrame(all_scores), pl.DataFrame(all_clusters)
    summary = {
        "plan": plan,
        "label_names": label_names,
        "n_docs": len(labels),
        "scores": all_scores,
        "seconds": time.perf_counter() - started,
    }
    names = layout.KMEANS.names
    with atomic_dir(out_dir) as tmp:
        cluster_table.write_parquet(tmp / names["clusters"])
        score_table.write_parquet(tmp / names["scores"])
        composition_plot(cluster_table, score_table, label_names, title, tmp / names["plot"])
        write_json(summary, tmp / names["summary"])
    log.info("%s: %d activation sets clustered in %.1f s", out_dir, len(plan), summary["seconds"])
    return summary


def composition_plot(clusters: pl.DataFrame, scores: pl.DataFrame, label_names: list[str], title: str, path) -> None:
    """Class composition of each cluster (stacked bars): one panel per representation, layer and variant."""
    plt = pyplot()
    panels = scores.select("representation", "site", "layer", "variant").rows()
    reps = scores["representation"].unique(maintain_order=True).to_list()
    cols = max(1, len(panels) // max(len(reps), 1))
    fig, axes = plt.subplots(len(reps), cols, figsize=(2.3 * cols, 2.5 * len(reps)), squeeze=False)
    colors = [plt.cm.tab10(i % 10) for i in range(len(label_names))]
    for i, rep in enumerate(reps):
        mine = [p for p in panels if p[0] == rep]
        for j, (_, site, layer, variant) in enumerate(mine[:cols]):
            ax = axes[i][j]
            pick = (
                (pl.col("representation") == rep)
                & (pl.col("site") == site)
                & (pl.col("layer") == layer)
                & (pl.col("variant") == variant)
            )
            part = clusters.filter(pick).sort("cluster")
            counts = np.array(part["label_counts"].to_list(), dtype=float).reshape(len(part), len(label_names))
            bottom = np.zeros(len(part))
            for c, name in enumerate(label_names):
                ax.bar(
                    [str(v) for v in part["cluster"].to_list()],
                    counts[:, c],
                    bottom=bottom,
                    color=colors[c],
                    label=name,
                )
                bottom += counts[:, c]
            ari = scores.filter(pick)["ari"][0]
            ax.set_title(f"{rep} {variant[:3]} L{layer}\nARI {ari:.2f}", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{title}: k-means clusters of test documents, class composition".strip(": "), fontsize=10)
    save(fig, path, dpi=100)


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    cli.add_config(parser, 'plan [{"acts": test activation set, "saes": {recipe: folder}}, ...]', "--plan")
    parser.add_argument("--tokens", required=True, help="tokens table of the test split")
    parser.add_argument("--data", required=True, help="the test split's data table (document texts)")
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names)")
    parser.add_argument(
        "--family", required=True, help="model family (workflow.models.families): which token is pooled"
    )
    cli.add_config(parser, "kmeans config")
    parser.add_argument("--title", default="")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.plan, args.tokens, args.data, args.meta, args.family, args.config, args.out_dir, args.title)
