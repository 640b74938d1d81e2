"""Stage `cluster`: how do documents group, in raw activations and in SAE latents?

Per (model, dataset): one job covers every (variant, site, layer) in the probe
scope (k-means on a few hundred documents is quick; one job saves the start-up
of many), on the test split. Each document
is pooled to one vector (``pooling``: the mean over its tokens, or the token
its classifier reads; `workflow.pooling`) of the raw activations (``raw``) and
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

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import io, sae as saes
from workflow.pooling import POSITION, pool_set
from workflow.tokenize import read_documents

log = logging.getLogger(__name__)


def purity(assign: np.ndarray, labels: np.ndarray) -> float:
    """Share of points whose label is their cluster's most common label."""
    if not len(labels):
        return float("nan")
    table = np.zeros((assign.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (assign, labels), 1)
    return float(table.max(1).sum() / len(labels))


def kmeans(x: np.ndarray, n_clusters: int, normalize: bool, n_init: int, seed: int):
    """(assignments, centres, the clustered space) of k-means on x (rows L2-normalised first if asked)."""
    from sklearn.cluster import KMeans

    if len(x) < n_clusters:
        raise ValueError(f"{len(x)} documents cannot make {n_clusters} clusters")
    z = x.astype(np.float64)
    if normalize:
        z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed).fit(z)
    return model.labels_.astype(np.int64), model.cluster_centers_, z


def scores(z: np.ndarray, assign: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    n_found = len(np.unique(assign))
    return {
        "purity": purity(assign, labels),
        "ari": float(adjusted_rand_score(labels, assign)),
        "nmi": float(normalized_mutual_info_score(labels, assign)),
        "silhouette": float(silhouette_score(z, assign)) if 1 < n_found < len(z) else float("nan"),
        "n_clusters_found": int(n_found),
    }


def cluster_rows(x: np.ndarray, z: np.ndarray, assign: np.ndarray, centres: np.ndarray, labels: np.ndarray,
                 label_names: list[str], doc_ids: np.ndarray, texts: list[str], n_nearest: int,
                 n_top_features: int) -> list[dict]:
    """One row per cluster: composition, nearest documents to its centre, top features."""
    overall = x.mean(0)
    rows = []
    for c in range(len(centres)):
        members = np.flatnonzero(assign == c)
        counts = np.bincount(labels[members], minlength=len(label_names))
        dist = np.linalg.norm(z[members] - centres[c], axis=1)
        nearest = members[np.argsort(dist, kind="stable")[:n_nearest]]
        gain = x[members].mean(0) - overall if len(members) else np.zeros(x.shape[1])
        top = np.argsort(-gain, kind="stable")[:n_top_features]
        rows.append({
            "cluster": c, "size": int(len(members)),
            "label_counts": counts.astype(np.int64).tolist(),
            "majority": label_names[int(counts.argmax())] if len(members) else None,
            "majority_share": float(counts.max() / len(members)) if len(members) else float("nan"),
            "nearest_doc_ids": doc_ids[nearest].astype(np.int64).tolist(),
            "nearest_texts": [texts[i] for i in nearest],
            "top_features": top.astype(np.int64).tolist(),
            "top_feature_gain": gain[top].astype(np.float64).tolist(),
        })
    return rows


def _top_tokens(sae_dir: str | None) -> dict[int, list[str]]:
    if not sae_dir or not (Path(sae_dir) / "features.parquet").exists():
        return {}
    table = pl.read_parquet(Path(sae_dir) / "features.parquet", columns=["feature", "top_tokens"])
    return dict(zip(table["feature"].to_list(), table["top_tokens"].to_list()))


def cluster_set(acts_dir: str, docs, labels: np.ndarray, doc_ids: np.ndarray, texts: list[str], label_names: list[str],
                family: str, sae_dirs: dict[str, str], cfg: dict) -> tuple[list[dict], list[dict]]:
    """Scores and cluster rows of one activation set, raw and through each SAE."""
    position = POSITION.get(family)
    if position is None:
        raise ValueError(f"model family {family!r}: no pooled position known (known: {', '.join(POSITION)})")
    pooling = position if cfg["pooling"] == "position" else "mean"
    n_clusters = cfg["n_clusters"] or len(label_names)
    aset = io.ActivationSet(acts_dir)
    reps = {"raw": pool_set(aset, docs.offsets, position, None, cfg["batch_rows"]).get(pooling)}
    for name, folder in sae_dirs.items():
        sae = saes.load(folder)
        if sae.d_in != aset.d_model:
            raise ValueError(f"{folder}: d_in {sae.d_in} does not match {acts_dir}'s d_model {aset.d_model}")
        reps[f"sae:{name}"] = pool_set(aset, docs.offsets, position, sae, cfg["batch_rows"]).get(pooling)
    score_rows, cluster_table = [], []
    for rep, x in reps.items():
        assign, centres, z = kmeans(x, n_clusters, cfg["normalize"], cfg["n_init"], cfg["seed"])
        result = scores(z, assign, labels)
        score_rows.append({"representation": rep, "pooling": pooling, "n_clusters": n_clusters, **result})
        log.info("%s %-12s k-means (%d clusters): purity %.3f ARI %.3f NMI %.3f silhouette %.3f", acts_dir, rep,
                 n_clusters, result["purity"], result["ari"], result["nmi"], result["silhouette"])
        tokens_of = _top_tokens(sae_dirs.get(rep.partition(":")[2])) if rep != "raw" else {}
        for row in cluster_rows(x, z, assign, centres, labels, label_names, doc_ids, texts, cfg["n_nearest"],
                                cfg["n_top_features"]):
            row["top_feature_tokens"] = [", ".join(tokens_of.get(f) or []) for f in row["top_features"]]
            cluster_table.append({"representation": rep, "pooling": pooling, **row})
    return score_rows, cluster_table


def run(plan: dict[str, dict], tokens_path: str, data_path: str, meta_path: str, family: str, cfg: dict,
        out_dir: str, title: str = "") -> dict:
    """plan: {"<variant>/<site>/L<layer>": {"acts": folder, "saes": {recipe: folder}}} over the test split."""
    started = time.perf_counter()
    label_names = io.read_json(meta_path)["label_names"]
    docs = read_documents(tokens_path)
    doc_ids = pl.read_parquet(tokens_path, columns=["doc_id"])["doc_id"].to_numpy()[docs.offsets[:-1]]
    data = pl.read_parquet(data_path, columns=["id", "text"])
    text_of = dict(zip(data["id"].to_list(), data["text"].to_list()))
    missing = [int(i) for i in doc_ids if int(i) not in text_of]
    if missing:
        raise ValueError(f"{data_path}: no text for document ids {missing[:5]} of {tokens_path}")
    texts = [text_of[int(i)] for i in doc_ids]
    labels = docs.labels.astype(np.int64)
    all_scores, all_clusters = [], []
    for key, entry in plan.items():
        variant, site, layer = _parse_key(key)
        where = {"variant": variant, "site": site, "layer": layer}
        score_rows, cluster_table = cluster_set(entry["acts"], docs, labels, doc_ids, texts, label_names, family,
                                                entry.get("saes") or {}, cfg)
        all_scores += [{**where, **row} for row in score_rows]
        all_clusters += [{**where, **row} for row in cluster_table]
    score_table, cluster_table = pl.DataFrame(all_scores), pl.DataFrame(all_clusters)
    summary = {"plan": plan, "label_names": label_names, "n_docs": len(labels), "scores": all_scores,
               "seconds": time.perf_counter() - started}
    with io.atomic_dir(out_dir) as tmp:
        cluster_table.write_parquet(tmp / "clusters.parquet")
        score_table.write_parquet(tmp / "scores.parquet")
        composition_plot(cluster_table, score_table, label_names, title, tmp / "clusters.png")
        io.write_json(summary, tmp / "cluster.json")
    log.info("%s: %d activation sets clustered in %.1f s", out_dir, len(plan), summary["seconds"])
    return summary


def _parse_key(key: str) -> tuple[str, str, int]:
    try:
        variant, site, layer = key.split("/")
        return variant, site, int(layer.lstrip("L"))
    except ValueError:
        raise ValueError(f"cluster plan key {key!r}: expected <variant>/<site>/L<layer>") from None


def composition_plot(clusters: pl.DataFrame, scores: pl.DataFrame, label_names: list[str], title: str, path) -> None:
    """Class composition of each cluster (stacked bars): one panel per representation, layer and variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = scores.select("representation", "site", "layer", "variant").rows()
    reps = scores["representation"].unique(maintain_order=True).to_list()
    cols = max(1, len(panels) // max(len(reps), 1))
    fig, axes = plt.subplots(len(reps), cols, figsize=(2.3 * cols, 2.5 * len(reps)), squeeze=False)
    colors = [plt.cm.tab10(i % 10) for i in range(len(label_names))]
    for i, rep in enumerate(reps):
        mine = [p for p in panels if p[0] == rep]
        for j, (_, site, layer, variant) in enumerate(mine[:cols]):
            ax = axes[i][j]
            pick = (pl.col("representation") == rep) & (pl.col("site") == site) & (pl.col("layer") == layer) & (
                pl.col("variant") == variant)
            part = clusters.filter(pick).sort("cluster")
            counts = np.array(part["label_counts"].to_list(), dtype=float).reshape(len(part), len(label_names))
            bottom = np.zeros(len(part))
            for c, name in enumerate(label_names):
                ax.bar([str(v) for v in part["cluster"].to_list()], counts[:, c], bottom=bottom, color=colors[c], label=name)
                bottom += counts[:, c]
            ari = scores.filter(pick)["ari"][0]
            ax.set_title(f"{rep} {variant[:3]} L{layer}\nARI {ari:.2f}", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    fig.suptitle(f"{title}: k-means clusters of test documents, class composition".strip(": "), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True,
                        help='JSON {"<variant>/<site>/L<layer>": {"acts": test activation set, "saes": {recipe: folder}}}')
    parser.add_argument("--tokens", required=True, help="tokens table of the test split")
    parser.add_argument("--data", required=True, help="the test split's data table (document texts)")
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names)")
    parser.add_argument("--family", required=True, help="model family: bert or gpt2")
    parser.add_argument("--config", required=True, help="the cluster config as JSON")
    parser.add_argument("--title", default="")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(json.loads(args.plan), args.tokens, args.data, args.meta, args.family, json.loads(args.config), args.out_dir,
        args.title)
