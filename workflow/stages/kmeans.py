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
from workflow.analysis.kmeans import cluster_representations
from workflow.analysis.pooling import pool_set
from workflow.layout import Representation
from workflow.models.families import family
from workflow.report.figures.clusters import composition_plot
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
    reps = {Representation.RAW: pool_set(aset, docs.offsets, position, None, batch_rows).get(pooling)}
    for name, folder in sae_dirs.items():
        sae = load(folder)
        if sae.d_in != aset.d_model:
            raise ValueError(f"{folder}: d_in {sae.d_in} does not match {aset.folder}'s d_model {aset.d_model}")
        reps[str(Representation.sae(name))] = pool_set(aset, docs.offsets, position, sae, batch_rows).get(pooling)
    return reps


def cluster_set(acts_dir: str, docs, labels, doc_ids, texts, label_names, family_name: str, sae_dirs: dict, cfg: dict):
    """Scores and cluster rows of one activation set, raw and through each SAE ({recipe: folder}),
    tagged with the set's variant, site and layer (from its manifest). docs, labels, doc_ids, texts:
    the test documents (`_documents`) and their labels."""
    position = family(family_name).pooled
    pooling = position if cfg["pooling"] == "position" else "mean"
    n_clusters = cfg["n_clusters"] or len(label_names)
    aset = ActivationSet(acts_dir)
    tags = {k: aset.manifest[k] for k in ("variant", "site", "layer")}
    reps = _representations(aset, docs, position, pooling, sae_dirs, cfg["batch_rows"])
    top_tokens = {str(Representation.sae(name)): _top_tokens(folder) for name, folder in sae_dirs.items()}
    return cluster_representations(
        reps, labels, label_names, doc_ids, texts, top_tokens, tags, pooling, n_clusters, cfg, acts_dir
    )


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


def run(plan: list, tokens_path: str, data_path: str, meta_path: str, family_name: str, cfg, out_dir, title="") -> dict:
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
