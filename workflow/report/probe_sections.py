"""The report page's probes and k-means sections, as data (see `workflow.report.sections`): sequence
probes, k-sparse probes and the features they pick first, concept token probes, k-means scores and the
clusters of SAE latents, each pivoted to one column per (site, layer, variant)."""

from __future__ import annotations

import polars as pl

from workflow.report.render import Image, Parts, Table
from workflow.report.rows import feature_link, pivot, sae_key_of, sae_keys
from workflow.store.files import nan_to_null


def ranked_features(ranked: pl.DataFrame, keys: dict, top: int = 5) -> Table | None:
    """The first features the k-sparse probes pick, per SAE representation."""
    picked = ranked.filter(pl.col("representation").str.starts_with("sae:") & (pl.col("rank") < top))
    rows = [
        [
            r["representation"],
            r["layer"],
            r["variant"],
            r["rank"] + 1,
            feature_link(sae_key_of(keys, r), r["feature"]),
            r["top_class"],
            r["f_score"],
            " ".join((r["top_tokens"] or [])[:5]),
        ]
        for r in picked.sort("representation", "site", "layer", "variant", "rank").iter_rows(named=True)
    ]
    if not rows:
        return None
    return Table(
        ["representation", "layer", "variant", "rank", "feature", "class", "ANOVA F", "top tokens"], rows, "ranked", 1
    )


def probes(tables: dict[str, pl.DataFrame], catalogue: list[dict], images: dict[str, Image | None]) -> dict:
    """Sequence probes, k-sparse probes and their first features, concept token probes
    (`tables`: the probe summary's probes, sparse, ranked and tokens tables)."""
    keys = sae_keys(catalogue)
    probe_table = tables["probes"]
    out = {
        "image": images.get("accuracy"),
        "chance": probe_table["chance"].max(),
        "sequence": pivot(
            probe_table, ["representation", "pooling"], lambda r: f"{r['accuracy']:.3f} / {r['macro_f1']:.3f}", "probes"
        ),
        "sparse": None,
        "ranked": None,
        "tokens": None,
    }
    sparse = tables["sparse"]
    if len(sparse):
        out["sparse"] = {
            "image": images.get("sparse"),
            "pooling": sparse["pooling"][0],
            "table": pivot(sparse, ["representation", "k"], lambda r: f"{r['accuracy']:.3f}", "sparse"),
        }
        out["ranked"] = ranked_features(tables["ranked"], keys)
    if len(tables["tokens"]):
        out["tokens"] = pivot(
            tables["tokens"],
            ["representation", "concept"],
            lambda r: f"{r['auroc']:.3f} / {r['average_precision']:.3f}",
            "token-probes",
        )
    return out


def cluster_details(clusters: pl.DataFrame, keys: dict) -> Table | None:
    """Each k-means cluster of SAE latents: size, majority class, the features that lift it most (linked)."""
    rows = []
    picked = nan_to_null(clusters.filter(pl.col("representation").str.starts_with("sae:")))
    for r in picked.sort("representation", "site", "layer", "variant", "cluster").iter_rows(named=True):
        key = sae_key_of(keys, r)
        share = "n/a" if r["majority_share"] is None else f"{r['majority_share']:.2f}"
        rows.append(
            [
                r["representation"],
                r["layer"],
                r["variant"],
                r["cluster"],
                r["size"],
                f"{r['majority']} ({share})",
                Parts(tuple(feature_link(key, f) for f in r["top_features"] or [])),
                (r["nearest_texts"] or [""])[0],
            ]
        )
    if not rows:
        return None
    return Table(
        [
            "representation",
            "layer",
            "variant",
            "cluster",
            "documents",
            "majority class",
            "top features",
            "nearest document",
        ],
        rows,
        "cluster-details",
    )


def kmeans(scores: pl.DataFrame, clusters: pl.DataFrame, catalogue: list[dict], image: Image | None) -> dict:
    """k-means scores per representation and layer, and the clusters of SAE latents."""
    return {
        "pooling": scores["pooling"][0],
        "n_clusters": scores["n_clusters"][0],
        "image": image,
        "table": pivot(
            scores,
            ["representation"],
            lambda r: f"{r['ari']:.3f} / {r['purity']:.3f} / {r['silhouette']:.3f}",
            "kmeans",
        ),
        "details": cluster_details(clusters, sae_keys(catalogue)),
    }
