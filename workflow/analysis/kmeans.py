"""K-means of pooled documents and how well the clusters follow the labels.

`kmeans` clusters (optionally on L2-normalised rows: spherical k-means);
`scores` rates the result against the labels (purity, ARI, NMI) and on its own
(silhouette); `cluster_rows` describes each cluster; `cluster_representations`
does all three for each representation of one activation set. Used by stage `kmeans`.
"""

from __future__ import annotations

import logging

import numpy as np

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


def cluster_rows(
    x: np.ndarray,
    z: np.ndarray,
    assign: np.ndarray,
    centres: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    doc_ids: np.ndarray,
    texts: list[str],
    n_nearest: int,
    n_top_features: int,
) -> list[dict]:
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
        rows.append(
            {
                "cluster": c,
                "size": int(len(members)),
                "label_counts": counts.astype(np.int64).tolist(),
                "majority": label_names[int(counts.argmax())] if len(members) else None,
                "majority_share": float(counts.max() / len(members)) if len(members) else float("nan"),
                "nearest_doc_ids": doc_ids[nearest].astype(np.int64).tolist(),
                "nearest_texts": [texts[i] for i in nearest],
                "top_features": top.astype(np.int64).tolist(),
                "top_feature_gain": gain[top].astype(np.float64).tolist(),
            }
        )
    return rows


def cluster_representations(
    reps: dict,
    labels: np.ndarray,
    label_names: list[str],
    doc_ids: np.ndarray,
    texts: list[str],
    top_tokens: dict,
    tags: dict,
    pooling: str,
    n_clusters: int,
    cfg: dict,
    where: str = "",
) -> tuple[list[dict], list[dict]]:
    """Scores and cluster rows of each representation of one activation set, tagged with `tags` (its
    variant, site, layer), the representation and the pooling. reps: representation -> (n_docs, d)
    pooled documents; top_tokens: representation -> {feature: its top tokens} (SAE latents)."""
    score_rows, cluster_table = [], []
    for rep, x in reps.items():
        assign, centres, z = kmeans(x, n_clusters, cfg["normalize"], cfg["n_init"], cfg["seed"])
        result = scores(z, assign, labels)
        score_rows.append({**tags, "representation": rep, "pooling": pooling, "n_clusters": n_clusters, **result})
        log.info(
            "%s %-12s k-means (%d clusters): purity %.3f ARI %.3f NMI %.3f silhouette %.3f",
            where,
            rep,
            n_clusters,
            result["purity"],
            result["ari"],
            result["nmi"],
            result["silhouette"],
        )
        tokens_of = top_tokens.get(rep) or {}
        for row in cluster_rows(
            x, z, assign, centres, labels, label_names, doc_ids, texts, cfg["n_nearest"], cfg["n_top_features"]
        ):
            row["top_feature_tokens"] = [", ".join(tokens_of.get(f) or []) for f in row["top_features"]]
            cluster_table.append({**tags, "representation": rep, "pooling": pooling, **row})
    return score_rows, cluster_table
