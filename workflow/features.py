"""Stage `features`: what each latent of one SAE responds to.

Runs on a held-out activation set of the SAE's own variant (row i is row i of
the tokens table). One encode pass keeps the non-zero codes (`workflow.codes`);
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

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import io, models, sae as saes
from workflow.codes import Codes, sparse_codes

log = logging.getLogger(__name__)

HIST_BINS = 20  # bins of each feature's activation histogram (hist_counts)
PRECISE = 0.8  # features.json: how many features reach this precision for a concept, and their union's recall
TOKEN_COLUMNS = ["row", "doc_id", "pos", "token_id", "token", "label", "is_special", "concepts"]


def _group_bounds(sorted_groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(sorted_groups, minlength=n_groups)
    ends = np.cumsum(counts)
    return ends - counts, ends


def _ranks_within(sorted_key: np.ndarray, starts_of_entries: np.ndarray) -> np.ndarray:
    """1-based rank of each entry among the entries of its group (the key sorts
    by group, then value); tied keys get their average rank."""
    n = len(sorted_key)
    if n == 0:
        return np.zeros(0)
    new_run = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    run_first = np.flatnonzero(new_run)
    run_last = np.r_[run_first[1:], n] - 1
    run_id = np.cumsum(new_run) - 1
    mid = (run_first[run_id] + run_last[run_id]) / 2.0
    return mid - starts_of_entries + 1


def feature_table(codes: Codes, tokens: pl.DataFrame, label_names: list[str], concepts: list[str],
                  top_tokens: int = 5, min_token_count: int = 3) -> tuple[pl.DataFrame, dict]:
    """Per-feature statistics (one row per feature) and the sort of the codes by
    (feature, value) that `examples` reuses."""
    d, n = codes.d_sae, codes.n_rows
    labels = tokens["label"].to_numpy()[:n].astype(np.int64)
    n_classes = len(label_names)
    # sort by (feature, value): non-negative float32 bit patterns sort like the floats
    key = (codes.feature.astype(np.uint64) << np.uint64(32)) | codes.value.view(np.uint32).astype(np.uint64)
    order = np.argsort(key, kind="stable")
    fs, vs, rs, key = codes.feature[order], codes.value[order], codes.row[order], key[order]
    starts, ends = _group_bounds(fs, d)
    fires = ends - starts

    out = {"feature": np.arange(d, dtype=np.int32), "n_active": fires, "frequency": fires / max(n, 1)}
    total = np.bincount(fs, weights=vs, minlength=d)
    out["mean_activation"] = total / max(n, 1)
    out["mean_active"] = np.where(fires > 0, total / np.maximum(fires, 1), 0.0)
    out["max_activation"] = np.where(fires > 0, vs[np.maximum(ends - 1, 0)] if len(vs) else 0.0, 0.0)
    out["hist_counts"] = activation_histograms(fs, vs, out["max_activation"], HIST_BINS)

    # label association; AUROC by Mann-Whitney: the n - fires zeros of a feature
    # tie at ranks 1..zeros (mean (zeros + 1) / 2); its non-zero values rank above
    zeros = n - fires
    rank = zeros[fs] + _ranks_within(key, starts[fs])
    cls = labels[rs] * d + fs
    class_sum = np.bincount(cls, weights=vs, minlength=n_classes * d).reshape(n_classes, d)
    class_nnz = np.bincount(cls, minlength=n_classes * d).reshape(n_classes, d)
    class_rank = np.bincount(cls, weights=rank, minlength=n_classes * d).reshape(n_classes, d)
    n_c = np.bincount(labels, minlength=n_classes).astype(np.float64)[:, None]
    rank_pos = class_rank + (n_c - class_nnz) * (zeros + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = (rank_pos - n_c * (n_c + 1) / 2) / (n_c * (n - n_c))
        class_mean = class_sum / n_c
    for c, name in enumerate(label_names):
        out[f"mean:{name}"] = class_mean[c]
    for c, name in enumerate(label_names):
        out[f"auroc:{name}"] = auroc[c]
    out["best_class"] = np.nanargmax(np.nan_to_num(auroc, nan=-1), axis=0) if n_classes else np.zeros(d, int)
    out["best_auroc"] = np.take_along_axis(auroc, out["best_class"][None], 0)[0] if n_classes else np.full(d, np.nan)

    # planted concepts: "fires" as a detector of the concept's tokens
    concept_counts = {}
    if concepts:
        token_concepts = tokens["concepts"][:n]
        for c in concepts:
            member = token_concepts.list.contains(c).to_numpy()
            concept_counts[c] = int(member.sum())
            tp = np.bincount(fs[member[rs]], minlength=d).astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                out[f"precision:{c}"] = np.where(fires > 0, tp / np.maximum(fires, 1), 0.0)
                out[f"recall:{c}"] = tp / max(concept_counts[c], 1)
                out[f"f1:{c}"] = np.where(fires + concept_counts[c] > 0, 2 * tp / (fires + concept_counts[c]), 0.0)

    table = pl.DataFrame(out).with_columns(pl.col("best_class").cast(pl.Int32))
    table = table.join(_top_tokens(fs, vs, rs, tokens, n, top_tokens, min_token_count), on="feature", how="left")
    sorted_codes = {"feature": fs, "value": vs, "row": rs, "starts": starts, "ends": ends}
    return table, {"sorted": sorted_codes, "concept_tokens": concept_counts}


def activation_histograms(fs: np.ndarray, vs: np.ndarray, max_activation: np.ndarray, bins: int) -> list[np.ndarray]:
    """Per feature, counts of its non-zero activations in `bins` equal bins over (0, its max];
    the max falls in the last bin (as in np.histogram with range (0, max))."""
    d = len(max_activation)
    scale = np.where(max_activation > 0, bins / np.maximum(max_activation, 1e-30), 0.0)
    b = np.minimum((vs * scale[fs]).astype(np.int64), bins - 1)
    counts = np.bincount(fs.astype(np.int64) * bins + b, minlength=d * bins).reshape(d, bins).astype(np.int32)
    return list(counts)


def sentence_features(codes: Codes, tokens: pl.DataFrame, n_docs: int, top: int) -> pl.DataFrame:
    """Every token of the first `n_docs` documents, with its `top` strongest features (strongest first)."""
    doc_ids = tokens["doc_id"].unique(maintain_order=True).head(n_docs)
    part = tokens.head(codes.n_rows).filter(pl.col("doc_id").is_in(doc_ids.implode()))
    rows = part["row"].to_numpy()
    lo, hi = np.searchsorted(codes.row, rows[0] if len(rows) else 0), np.searchsorted(codes.row, rows[-1] + 1 if len(rows) else 0)
    fired = pl.DataFrame({"row": codes.row[lo:hi].astype(np.int64), "feature": codes.feature[lo:hi],
                          "activation": codes.value[lo:hi]})
    fired = (fired.filter(pl.col("row").is_in(pl.Series(rows).implode()))
             .sort(["row", "activation"], descending=[False, True]).group_by("row", maintain_order=True).head(top)
             .group_by("row", maintain_order=True).agg(pl.col("feature").alias("features"),
                                                       pl.col("activation").alias("acts")))
    return (part.select(pl.col("row").cast(pl.Int64), "doc_id", "pos", "token", "label")
            .join(fired, on="row", how="left", maintain_order="left")
            .with_columns(pl.col("features").fill_null(pl.lit([], dtype=pl.List(pl.Int32))),
                          pl.col("acts").fill_null(pl.lit([], dtype=pl.List(pl.Float32)))))


def _top_tokens(fs, vs, rs, tokens: pl.DataFrame, n: int, top: int, min_count: int) -> pl.DataFrame:
    """Per feature, the `top` vocabulary tokens of highest mean activation over all occurrences."""
    token_ids = tokens["token_id"].to_numpy()[:n].astype(np.int64)
    vocab = int(token_ids.max()) + 1 if n else 1
    occurrences = np.bincount(token_ids, minlength=vocab)
    pair, inverse = np.unique(fs.astype(np.int64) * vocab + token_ids[rs], return_inverse=True)
    sums = np.bincount(inverse, weights=vs)
    tok = pair % vocab
    frame = pl.DataFrame({"feature": (pair // vocab).astype(np.int32), "token_id": tok,
                          "mean": (sums / occurrences[tok]).astype(np.float32)})
    frame = frame.filter(pl.Series(occurrences[tok] >= min_count))
    strings = tokens.select("token_id", "token").unique("token_id")
    return (frame.sort(["feature", "mean"], descending=[False, True])
            .group_by("feature", maintain_order=True).head(top)
            .join(strings, on="token_id", how="left", maintain_order="left")
            .group_by("feature", maintain_order=True)
            .agg(pl.col("token").alias("top_tokens"), pl.col("mean").alias("top_token_means")))


def example_positions(sorted_codes: dict, n_top: int, n_quantiles: int, per_quantile: int, seed: int) -> pl.DataFrame:
    """Which coded entries become examples: per feature the n_top largest, and
    per_quantile random draws from each quantile bin of its non-zero values."""
    starts, ends = sorted_codes["starts"], sorted_codes["ends"]
    fires = ends - starts
    feats = np.arange(len(fires))
    take = np.minimum(fires, n_top)
    f_top = np.repeat(feats, take)
    j = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    top = pl.DataFrame({"feature": f_top, "kind": pl.Series(["top"] * len(f_top), dtype=pl.Utf8), "rank": j,
                        "at": ends[f_top] - 1 - j})
    rng = np.random.default_rng(seed)
    parts = [top]
    for b in range(n_quantiles):
        lo = starts + fires * b // n_quantiles
        hi = starts + fires * (b + 1) // n_quantiles
        ok = feats[hi > lo]
        for _ in range(per_quantile):
            at = lo[ok] + (rng.random(len(ok)) * (hi[ok] - lo[ok])).astype(np.int64)
            parts.append(pl.DataFrame({"feature": ok, "kind": pl.Series(["quantile"] * len(ok), dtype=pl.Utf8),
                                       "rank": np.full(len(ok), b), "at": at}))
    frame = pl.concat([p.with_columns(pl.col("feature").cast(pl.Int32), pl.col("rank").cast(pl.Int32),
                                      pl.col("at").cast(pl.Int64)) for p in parts])
    return frame.unique(["feature", "kind", "at"], maintain_order=True)


def examples_table(codes: Codes, sorted_codes: dict, positions: pl.DataFrame, tokens: pl.DataFrame, window: int) -> pl.DataFrame:
    """One row per example: its token in context and the feature's activation on every window token."""
    at = positions["at"].to_numpy()
    feature = positions["feature"].to_numpy()
    row = sorted_codes["row"][at].astype(np.int64)
    doc = tokens["doc_id"].to_numpy()
    doc_start, doc_end = _document_bounds(doc)
    lo = np.maximum(row - window, doc_start[row])
    hi = np.minimum(np.minimum(row + window + 1, doc_end[row]), codes.n_rows)  # only rows that were encoded
    length = hi - lo
    example = np.repeat(np.arange(len(row)), length)
    window_row = np.repeat(lo, length) + np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    acts = codes.lookup(window_row, np.repeat(feature, length))
    flat = pl.DataFrame({"example": example, "token": tokens["token"].gather(window_row), "act": acts})
    windows = flat.group_by("example", maintain_order=True).agg(pl.col("token").alias("tokens"), pl.col("act").alias("acts"))
    return positions.drop("at").with_columns(
        pl.Series("row", row), pl.Series("doc_id", doc[row]), pl.Series("pos", tokens["pos"].to_numpy()[row]),
        pl.Series("activation", sorted_codes["value"][at]), pl.Series("center", (row - lo).astype(np.int32)),
        windows["tokens"], windows["acts"],
    )


def precise_union(codes: Codes, table: pl.DataFrame, tokens: pl.DataFrame, concept: str, min_precision: float) -> dict:
    """How a concept is split over features: the features whose precision for it is at least
    `min_precision`, and the recall and precision of "any of them fires"."""
    precise = table.filter(pl.col(f"precision:{concept}") >= min_precision)["feature"].to_numpy()
    member = tokens["concepts"][: codes.n_rows].list.contains(concept).to_numpy()
    rows = np.unique(codes.row[np.isin(codes.feature, precise)])
    return {"precise_features": int(len(precise)), "precise_union_recall": float(member[rows].sum() / max(member.sum(), 1)),
            "precise_union_precision": float(member[rows].mean()) if len(rows) else 0.0}


def _document_bounds(doc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first row of its document and one past the last (rows of a document are contiguous)."""
    new = np.r_[True, doc[1:] != doc[:-1]]
    first = np.flatnonzero(new)
    last = np.r_[first[1:], len(doc)]
    idx = np.cumsum(new) - 1
    return first[idx], last[idx]


def _top_by(table: pl.DataFrame, column: str, n: int) -> list[int]:
    """Features of the n largest finite values of a column (NaN, e.g. a class absent from the split, last)."""
    return (table.with_columns(pl.col(column).fill_nan(None)).sort(column, descending=True, nulls_last=True)
            .filter(pl.col(column).is_not_null())["feature"].head(n).to_list())


def _plots(table: pl.DataFrame, codes: Codes, tokens: pl.DataFrame, label_names, concepts, sentence: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # heatmap: the most class-selective features of each class and the best feature of each concept
    live = table.filter(pl.col("n_active") > 0)
    picked: list[int] = []
    for name in label_names:
        picked += _top_by(live, f"auroc:{name}", 4)
    for c in concepts:
        picked += _top_by(live, f"f1:{c}", 1)
    picked = list(dict.fromkeys(picked))
    if not picked:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no feature fired on these tokens", ha="center", va="center")
        ax.axis("off")
        fig.savefig(out / "features.png", dpi=110)
        plt.close(fig)
    else:
        rows = table.filter(pl.col("feature").is_in(picked)).sort(pl.col("feature").replace_strict(
            {f: i for i, f in enumerate(picked)}, return_dtype=pl.Int64))
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
        fig.tight_layout()
        fig.savefig(out / "features.png", dpi=110)
        plt.close(fig)

    # one sentence: activation strength of its strongest features on each token
    doc_ids = tokens["doc_id"].unique(maintain_order=True)
    doc_id = doc_ids[min(sentence, len(doc_ids) - 1)]
    rows = tokens.filter(pl.col("doc_id") == doc_id)["row"].to_numpy()
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
    fig.tight_layout()
    fig.savefig(out / "sentence.png", dpi=110)
    plt.close(fig)


def run(sae_dir: str, acts_dir: str, tokens_path: str, meta_path: str, cfg: dict) -> dict:
    started = time.perf_counter()
    device = models.pick_device()
    sae = saes.load(sae_dir, device)
    aset = io.ActivationSet(acts_dir)
    if aset.d_model != sae.d_in:
        raise ValueError(f"{acts_dir}: d_model {aset.d_model} does not match the SAE's d_in {sae.d_in} ({sae_dir})")
    tokens = pl.read_parquet(tokens_path, columns=TOKEN_COLUMNS)
    if len(tokens) != aset.n_rows:
        raise ValueError(f"{tokens_path}: {len(tokens)} rows, but the activation set {acts_dir} has {aset.n_rows}")
    meta = io.read_json(meta_path)
    label_names, concepts = meta["label_names"], meta.get("concepts") or []
    codes = sparse_codes(sae, aset, cfg["max_tokens"], cfg["batch_rows"], device)
    encoded = time.perf_counter()
    table, extra = feature_table(codes, tokens, label_names, concepts, cfg["top_tokens"], cfg["min_token_count"])
    positions = example_positions(extra["sorted"], cfg["n_top"], cfg["n_quantiles"], cfg["per_quantile"], cfg["seed"])
    examples = examples_table(codes, extra["sorted"], positions, tokens, cfg["window"])
    out = Path(sae_dir)
    best = {}
    for c in concepts:
        if not extra["concept_tokens"][c]:
            best[c] = None  # the concept does not occur in these tokens
            log.info("concept %-22s has no tokens in this split", c)
            continue
        row = table.sort(f"f1:{c}", descending=True).row(0, named=True)
        best[c] = {"feature": row["feature"], "f1": row[f"f1:{c}"], "precision": row[f"precision:{c}"],
                   "recall": row[f"recall:{c}"], "tokens": extra["concept_tokens"][c],
                   **precise_union(codes, table, tokens, c, PRECISE)}
        log.info("concept %-22s best feature %6d  F1 %.3f  (precision %.3f, recall %.3f; %d tokens)", c,
                 row["feature"], row[f"f1:{c}"], row[f"precision:{c}"], row[f"recall:{c}"], extra["concept_tokens"][c])
    _plots(table, codes, tokens, label_names, concepts, cfg["sentence"], out)
    io.write_parquet(examples, out / "examples.parquet")
    io.write_parquet(sentence_features(codes, tokens, cfg["sentence_docs"], cfg["sentence_top"]), out / "sentences.parquet")
    io.write_parquet(table, out / "features.parquet")
    summary = {
        "sae": sae_dir, "activations": acts_dir, "n_tokens": codes.n_rows, "d_sae": codes.d_sae,
        "label_names": label_names, "concepts": concepts, "best_feature_per_concept": best,
        "dead_fraction": float((table["n_active"] == 0).mean()), "l0": len(codes.value) / max(codes.n_rows, 1),
        "n_examples": len(examples), "encode_seconds": encoded - started, "seconds": time.perf_counter() - started,
    }
    io.write_json(summary, out / "features.json")
    log.info("%s: %d features over %d tokens, %d examples; encode %.1f s, total %.1f s", sae_dir, codes.d_sae,
             codes.n_rows, len(examples), summary["encode_seconds"], summary["seconds"])
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow features", description=__doc__.splitlines()[0])
    parser.add_argument("--sae", required=True, help="SAE folder; outputs are written beside its weights")
    parser.add_argument("--acts", required=True, help="activation set of the same (variant, site, layer)")
    parser.add_argument("--tokens", required=True, help="tokens table of the activation set's split")
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names, concepts)")
    parser.add_argument("--config", required=True, help="the features config as JSON")
    args = parser.parse_args(argv)
    run(args.sae, args.acts, args.tokens, args.meta, json.loads(args.config))
