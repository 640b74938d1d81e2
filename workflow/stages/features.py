"""Stage `features`: what each latent of one SAE responds to.

Runs on a held-out activation set of the SAE's own variant (row i is row i of
the tokens table). One encode pass keeps the non-zero codes (`workflow.sae.codes`);
every statistic below is then computed for all features at once with
vectorised numpy over those codes (sorts and bincounts; no loop over features
or over the data):

- ``frequency`` (share of tokens on which the feature fires), ``mean_activation``
  (over all tokens), ``mean_active`` (over the tokens where it fires),
  ``max_activation``;
- ``top_tokens``: the vocabulary tokens with the highest mean activation over
  all their occurrences (tokens seen fewer than ``min_token_count`` times are
  skipped, as one-off tokens make noisy means);
- label association: ``mean:<label>`` (mean activation over the tokens of
  documents of that class) and ``auroc:<label>`` (one-vs-rest AUROC of the
  activation as a score for the class: exact Mann-Whitney with ties, so the
  many zeros count as ties; 0.5 is no association, 1 fires only for the class);
- concept alignment, for datasets with planted concepts: ``precision:<c>``,
  ``recall:<c>``, ``f1:<c>`` of "feature > 0" as a detector of the tokens of
  concept c; features.json names the best feature per concept and, to show
  how a concept is split over features, how many features detect it with
  precision >= 0.8 and the recall of their union;
- ``hist_counts``: a histogram of the feature's non-zero activations,
  ``HIST_BINS`` equal bins from 0 to its ``max_activation`` (the report's
  density plot);
- examples (`examples.parquet`): the ``n_top`` highest activations, and
  ``per_quantile`` random samples from each of ``n_quantiles`` quantile bins of
  the feature's non-zero activations, each with ``window`` tokens of context
  either side (within its document) and the feature's activation on every
  token of the window, so a page can shade each token;
- sentences (`sentences.parquet`): every token of the first ``sentence_docs``
  test documents with the (up to) ``sentence_top`` strongest features firing on
  it, the same documents for every SAE of a (model, dataset), so the report's
  sentence view can set layers and variants side by side.

Plots: ``features.png`` (a heatmap of the most label-associated and most
concept-aligned features: mean activation per class, F1 per concept) and
``sentence.png`` (activation strengths of the strongest features on every
token of one chosen test sentence).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.features import (
    PRECISE,
    example_positions,
    examples_table,
    feature_table,
    first_windows,
    precise_union,
    read_tokens,
    sentence_features,
)
from workflow.models.loading import pick_device
from workflow.report.figures.canvas import pyplot, save
from workflow.runner import cli
from workflow.sae import load
from workflow.sae.codes import Codes, sparse_codes
from workflow.store.activations import ActivationSet
from workflow.store.files import read_json, write_json, write_parquet

log = logging.getLogger(__name__)


def _top_by(table: pl.DataFrame, column: str, n: int) -> list[int]:
    """Features of the n largest finite values of a column (NaN, e.g. a class absent from the split, last)."""
    return (
        table.with_columns(pl.col(column).fill_nan(None))
        .sort(column, descending=True, nulls_last=True)
        .filter(pl.col(column).is_not_null())["feature"]
        .head(n)
        .to_list()
    )


def heatmap(table: pl.DataFrame, label_names: list[str], concepts: list[str], path: Path) -> None:
    """The most class-selective features of each class and the best feature of each concept."""
    plt = pyplot()
    live = table.filter(pl.col("n_active") > 0)
    picked: list[int] = []
    for name in label_names:
        picked += _top_by(live, f"auroc:{name}", 4)
    for c in concepts:
        picked += _top_by(live, f"f1:{c}", 1)
    picked = list(dict.fromkeys(picked))
    if not picked:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        why = "no feature fired on these tokens" if label_names or concepts else "unlabelled text: no classes"
        ax.text(0.5, 0.5, why, ha="center", va="center")
        ax.axis("off")
        save(fig, path, dpi=110, tight=False)
        return
    rows = table.filter(pl.col("feature").is_in(picked)).sort(
        pl.col("feature").replace_strict({f: i for i, f in enumerate(picked)}, return_dtype=pl.Int64)
    )
    means = rows.select([f"mean:{n}" for n in label_names]).to_numpy()
    means = means / np.maximum(means.max(axis=1, keepdims=True), 1e-12)
    panels = [(means, label_names, "mean activation per class (row max = 1)")]
    if concepts:
        panels.append((rows.select([f"f1:{c}" for c in concepts]).to_numpy(), concepts, "F1 as concept detector"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 3 * len(panels), 1.5 + 0.25 * len(picked)), squeeze=False)
    for ax, (values, names, title) in zip(axes[0], panels):
        im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(picked)), [f"f{f}" for f in picked])
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax)
    save(fig, path, dpi=110)


def sentence_plot(codes: Codes, tokens: pl.DataFrame, sentence: int, path: Path) -> None:
    """One test document (its first window): activation strength of its strongest features on each token."""
    plt = pyplot()
    doc_ids = tokens["doc_id"].unique(maintain_order=True)
    doc_id = doc_ids[min(sentence, len(doc_ids) - 1)]
    rows = first_windows(tokens).filter(pl.col("doc_id") == doc_id)["row"].to_numpy()
    rows = rows[rows < codes.n_rows]
    mask = np.isin(codes.row, rows)
    strength = np.bincount(codes.feature[mask], weights=codes.value[mask], minlength=codes.d_sae)
    top = np.argsort(-strength)[: min(10, int((strength > 0).sum()))]
    grid = codes.lookup(np.tile(rows, len(top)), np.repeat(top, len(rows))).reshape(len(top), len(rows))
    fig, ax = plt.subplots(figsize=(2 + 0.4 * len(rows), 1.5 + 0.35 * max(len(top), 1)))
    im = ax.imshow(grid if len(top) else np.zeros((1, len(rows))), aspect="auto", cmap="Reds")
    ax.set_xticks(range(len(rows)), tokens["token"].gather(rows).to_list(), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(top)), [f"f{f}" for f in top])
    ax.set_title(f"activation of the strongest features on test document {doc_id}", fontsize=9)
    fig.colorbar(im, ax=ax)
    save(fig, path, dpi=110)


def best_per_concept(
    codes: Codes, table: pl.DataFrame, tokens: pl.DataFrame, concepts: list[str], concept_tokens: dict
) -> dict:
    """Per concept, the feature that detects it best (F1) and how the concept is split over features."""
    best = {}
    for c in concepts:
        if not concept_tokens[c]:
            best[c] = None  # the concept does not occur in these tokens
            log.info("concept %-22s has no tokens in this split", c)
            continue
        row = table.sort(f"f1:{c}", descending=True).row(0, named=True)
        best[c] = {
            "feature": row["feature"],
            "f1": row[f"f1:{c}"],
            "precision": row[f"precision:{c}"],
            "recall": row[f"recall:{c}"],
            "tokens": concept_tokens[c],
            **precise_union(codes, table, tokens, c, PRECISE),
        }
        log.info(
            "concept %-22s best feature %6d  F1 %.3f  (precision %.3f, recall %.3f; %d tokens)",
            c,
            row["feature"],
            row[f"f1:{c}"],
            row[f"precision:{c}"],
            row[f"recall:{c}"],
            concept_tokens[c],
        )
    return best


def _inputs(sae_dir: str, acts_dir: str, tokens_path: str, device):
    sae = load(sae_dir, device)
    aset = ActivationSet(acts_dir)
    if aset.d_model != sae.d_in:
        raise ValueError(f"{acts_dir}: d_model {aset.d_model} does not match the SAE's d_in {sae.d_in} ({sae_dir})")
    tokens = read_tokens(tokens_path)
    if len(tokens) != aset.n_rows:
        raise ValueError(f"{tokens_path}: {len(tokens)} rows, but the activation set {acts_dir} has {aset.n_rows}")
    return sae, aset, tokens


def run(sae_dir: str, acts_dir: str, tokens_path: str, meta_path: str, cfg: dict) -> dict:
    started = time.perf_counter()
    device = pick_device()
    sae, aset, tokens = _inputs(sae_dir, acts_dir, tokens_path, device)
    meta = read_json(meta_path)
    label_names, concepts = meta["label_names"], meta.get("concepts") or []
    codes = sparse_codes(sae, aset, cfg["max_tokens"], cfg["batch_rows"], device)
    encoded = time.perf_counter()
    table, extra = feature_table(codes, tokens, label_names, concepts, cfg["top_tokens"], cfg["min_token_count"])
    positions = example_positions(extra["sorted"], cfg["n_top"], cfg["n_quantiles"], cfg["per_quantile"], cfg["seed"])
    examples = examples_table(codes, extra["sorted"], positions, tokens, cfg["window"])
    best = best_per_concept(codes, table, tokens, concepts, extra["concept_tokens"])
    out, names = Path(sae_dir), layout.SAE.names
    heatmap(table, label_names, concepts, out / names["heatmap"])
    sentence_plot(codes, tokens, cfg["sentence"], out / names["sentence"])
    write_parquet(examples, out / names["examples"])
    write_parquet(sentence_features(codes, tokens, cfg["sentence_docs"], cfg["sentence_top"]), out / names["sentences"])
    write_parquet(table, out / names["features"])
    summary = {
        "sae": sae_dir,
        "study": sae.cfg["metadata"].get("study"),
        "activations": acts_dir,
        "n_tokens": codes.n_rows,
        "d_sae": codes.d_sae,
        "label_names": label_names,
        "concepts": concepts,
        "best_feature_per_concept": best,
        "dead_fraction": float((table["n_active"] == 0).mean()),
        "l0": len(codes.value) / max(codes.n_rows, 1),
        "n_examples": len(examples),
        "encode_seconds": encoded - started,
        "seconds": time.perf_counter() - started,
    }
    write_json(summary, out / names["features_summary"])
    log.info(
        "%s: %d features over %d tokens, %d examples; encode %.1f s, total %.1f s",
        sae_dir,
        codes.d_sae,
        codes.n_rows,
        len(examples),
        summary["encode_seconds"],
        summary["seconds"],
    )
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--sae", required=True, help="SAE folder; outputs are written beside its weights")
    parser.add_argument("--acts", required=True, help="activation set of the same (variant, site, layer)")
    parser.add_argument("--tokens", required=True, help="tokens table of the activation set's split")
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names, concepts)")
    cli.add_config(parser, "features config")
    args = parser.parse_args(argv)
    run(args.sae, args.acts, args.tokens, args.meta, args.config)
