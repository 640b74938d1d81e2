"""Per-feature statistics of an SAE's sparse codes, all features at once.

Every statistic is computed with vectorised numpy over the non-zero codes
(`workflow.sae.codes.Codes`): sorts and bincounts, no loop over features or
over the data. What each column means is in the `features` stage's docstring.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl

from workflow.sae.codes import Codes

log = logging.getLogger(__name__)

HIST_BINS = 20  # bins of each feature's activation histogram (hist_counts)
PRECISE = 0.8  # features.json: how many features reach this precision for a concept, and their union's recall
TOKEN_COLUMNS = ["row", "doc_id", "pos", "token_id", "token", "label", "is_special", "concepts"]


def read_tokens(path) -> pl.DataFrame:
    """The tokens table's columns the feature statistics use (and `window`, where it has one)."""
    names = pl.read_parquet_schema(path)
    return pl.read_parquet(path, columns=[*TOKEN_COLUMNS, *(["window"] if "window" in names else [])])


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


def sort_codes(codes: Codes) -> dict:
    """The codes sorted by (feature, value), with each feature's [start, end) in that order."""
    # non-negative float32 bit patterns sort like the floats
    key = (codes.feature.astype(np.uint64) << np.uint64(32)) | codes.value.view(np.uint32).astype(np.uint64)
    order = np.argsort(key, kind="stable")
    starts, ends = _group_bounds(codes.feature[order], codes.d_sae)
    return {
        "feature": codes.feature[order],
        "value": codes.value[order],
        "row": codes.row[order],
        "key": key[order],
        "starts": starts,
        "ends": ends,
    }


def _label_association(s: dict, labels: np.ndarray, label_names: list[str], n: int, d: int) -> dict:
    """mean:<label>, auroc:<label>, best_class and best_auroc of every feature.

    AUROC by Mann-Whitney: the n - fires zeros of a feature tie at ranks 1..zeros (mean
    (zeros + 1) / 2); its non-zero values rank above."""
    fs, vs, rs, starts = s["feature"], s["value"], s["row"], s["starts"]
    n_classes = len(label_names)
    if not n_classes:  # unlabelled text: no class to associate with
        return {"best_class": np.zeros(d, int), "best_auroc": np.full(d, np.nan)}
    zeros = n - (s["ends"] - starts)
    rank = zeros[fs] + _ranks_within(s["key"], starts[fs])
    cls = labels[rs] * d + fs
    class_sum = np.bincount(cls, weights=vs, minlength=n_classes * d).reshape(n_classes, d)
    class_nnz = np.bincount(cls, minlength=n_classes * d).reshape(n_classes, d)
    class_rank = np.bincount(cls, weights=rank, minlength=n_classes * d).reshape(n_classes, d)
    n_c = np.bincount(labels, minlength=n_classes).astype(np.float64)[:, None]
    rank_pos = class_rank + (n_c - class_nnz) * (zeros + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        auroc = (rank_pos - n_c * (n_c + 1) / 2) / (n_c * (n - n_c))
        class_mean = class_sum / n_c
    out = {f"mean:{name}": class_mean[c] for c, name in enumerate(label_names)}
    out.update({f"auroc:{name}": auroc[c] for c, name in enumerate(label_names)})
    out["best_class"] = np.nanargmax(np.nan_to_num(auroc, nan=-1), axis=0) if n_classes else np.zeros(d, int)
    out["best_auroc"] = np.take_along_axis(auroc, out["best_class"][None], 0)[0] if n_classes else np.full(d, np.nan)
    return out


def _concept_alignment(s: dict, tokens: pl.DataFrame, concepts: list[str], n: int, d: int) -> tuple[dict, dict]:
    """precision/recall/f1:<concept> of "fires" as a detector of the concept's tokens, and each
    concept's token count."""
    fires = s["ends"] - s["starts"]
    out, counts = {}, {}
    token_concepts = tokens["concepts"][:n]
    for c in concepts:
        member = token_concepts.list.contains(c).to_numpy()
        counts[c] = int(member.sum())
        tp = np.bincount(s["feature"][member[s["row"]]], minlength=d).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"precision:{c}"] = np.where(fires > 0, tp / np.maximum(fires, 1), 0.0)
            out[f"recall:{c}"] = tp / max(counts[c], 1)
            out[f"f1:{c}"] = np.where(fires + counts[c] > 0, 2 * tp / (fires + counts[c]), 0.0)
    return out, counts


def feature_table(
    codes: Codes,
    tokens: pl.DataFrame,
    label_names: list[str],
    concepts: list[str],
    top_tokens: int = 5,
    min_token_count: int = 3,
) -> tuple[pl.DataFrame, dict]:
    """Per-feature statistics (one row per feature) and the sort of the codes by
    (feature, value) that `examples` reuses."""
    d, n = codes.d_sae, codes.n_rows
    s = sort_codes(codes)
    fs, vs, rs, ends = s["feature"], s["value"], s["row"], s["ends"]
    fires = ends - s["starts"]
    out = {"feature": np.arange(d, dtype=np.int32), "n_active": fires, "frequency": fires / max(n, 1)}
    total = np.bincount(fs, weights=vs, minlength=d)
    out["mean_activation"] = total / max(n, 1)
    out["mean_active"] = np.where(fires > 0, total / np.maximum(fires, 1), 0.0)
    out["max_activation"] = np.where(fires > 0, vs[np.maximum(ends - 1, 0)] if len(vs) else 0.0, 0.0)
    out["hist_counts"] = activation_histograms(fs, vs, out["max_activation"], HIST_BINS)
    labels = tokens["label"].to_numpy()[:n].astype(np.int64)
    out.update(_label_association(s, labels, label_names, n, d))
    aligned, concept_counts = _concept_alignment(s, tokens, concepts, n, d) if concepts else ({}, {})
    out.update(aligned)
    table = pl.DataFrame(out).with_columns(pl.col("best_class").cast(pl.Int32))
    table = table.join(_top_tokens(fs, vs, rs, tokens, n, top_tokens, min_token_count), on="feature", how="left")
    sorted_codes = {k: s[k] for k in ("feature", "value", "row", "starts", "ends")}
    return table, {"sorted": sorted_codes, "concept_tokens": concept_counts}


def describe(
    codes: Codes,
    tokens: pl.DataFrame,
    label_names: list[str],
    concepts: list[str],
    cfg: dict,
    extra: dict | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """The features stage's tables of one set of codes: `feature_table`, and the examples
    (`example_positions`, `examples_table` with the `extra` per-token columns). `cfg`: the features
    section. Returns (features table, examples table, the sorted codes and concept token counts)."""
    table, more = feature_table(codes, tokens, label_names, concepts, cfg["top_tokens"], cfg["min_token_count"])
    positions = example_positions(more["sorted"], cfg["n_top"], cfg["n_quantiles"], cfg["per_quantile"], cfg["seed"])
    examples = examples_table(codes, more["sorted"], positions, tokens, cfg["window"], extra)
    return table, examples, more


def activation_histograms(fs: np.ndarray, vs: np.ndarray, max_activation: np.ndarray, bins: int) -> list[np.ndarray]:
    """Per feature, counts of its non-zero activations in `bins` equal bins over (0, its max];
    the max falls in the last bin (as in np.histogram with range (0, max))."""
    d = len(max_activation)
    scale = np.where(max_activation > 0, bins / np.maximum(max_activation, 1e-30), 0.0)
    b = np.minimum((vs * scale[fs]).astype(np.int64), bins - 1)
    counts = np.bincount(fs.astype(np.int64) * bins + b, minlength=d * bins).reshape(d, bins).astype(np.int32)
    return list(counts)


def first_windows(tokens: pl.DataFrame) -> pl.DataFrame:
    """The rows of each document's first window (all rows where documents are not windowed)."""
    return tokens.filter(pl.col("window") == 0) if "window" in tokens.columns else tokens


def sentence_features(codes: Codes, tokens: pl.DataFrame, n_docs: int, top: int) -> pl.DataFrame:
    """Every token of the first `n_docs` documents (their first windows, where documents are
    windowed), with its `top` strongest features (strongest first)."""
    doc_ids = tokens["doc_id"].unique(maintain_order=True).head(n_docs)
    part = first_windows(tokens.head(codes.n_rows)).filter(pl.col("doc_id").is_in(doc_ids.implode()))
    rows = part["row"].to_numpy()
    lo, hi = (
        np.searchsorted(codes.row, rows[0] if len(rows) else 0),
        np.searchsorted(codes.row, rows[-1] + 1 if len(rows) else 0),
    )
    fired = pl.DataFrame(
        {"row": codes.row[lo:hi].astype(np.int64), "feature": codes.feature[lo:hi], "activation": codes.value[lo:hi]}
    )
    fired = (
        fired.filter(pl.col("row").is_in(pl.Series(rows).implode()))
        .sort(["row", "activation"], descending=[False, True])
        .group_by("row", maintain_order=True)
        .head(top)
        .group_by("row", maintain_order=True)
        .agg(pl.col("feature").alias("features"), pl.col("activation").alias("acts"))
    )
    return (
        part.select(pl.col("row").cast(pl.Int64), "doc_id", "pos", "token", "label")
        .join(fired, on="row", how="left", maintain_order="left")
        .with_columns(
            pl.col("features").fill_null(pl.lit([], dtype=pl.List(pl.Int32))),
            pl.col("acts").fill_null(pl.lit([], dtype=pl.List(pl.Float32))),
        )
    )


def _top_tokens(fs, vs, rs, tokens: pl.DataFrame, n: int, top: int, min_count: int) -> pl.DataFrame:
    """Per feature, the `top` vocabulary tokens of highest mean activation over all occurrences."""
    token_ids = tokens["token_id"].to_numpy()[:n].astype(np.int64)
    vocab = int(token_ids.max()) + 1 if n else 1
    occurrences = np.bincount(token_ids, minlength=vocab)
    pair, inverse = np.unique(fs.astype(np.int64) * vocab + token_ids[rs], return_inverse=True)
    sums = np.bincount(inverse, weights=vs)
    tok = pair % vocab
    frame = pl.DataFrame(
        {
            "feature": (pair // vocab).astype(np.int32),
            "token_id": tok,
            "mean": (sums / occurrences[tok]).astype(np.float32),
        }
    )
    frame = frame.filter(pl.Series(occurrences[tok] >= min_count))
    strings = tokens.select("token_id", "token").unique("token_id")
    return (
        frame.sort(["feature", "mean"], descending=[False, True])
        .group_by("feature", maintain_order=True)
        .head(top)
        .join(strings, on="token_id", how="left", maintain_order="left")
        .group_by("feature", maintain_order=True)
        .agg(pl.col("token").alias("top_tokens"), pl.col("mean").alias("top_token_means"))
    )


def example_positions(sorted_codes: dict, n_top: int, n_quantiles: int, per_quantile: int, seed: int) -> pl.DataFrame:
    """Which coded entries become examples: per feature the n_top largest, and
    per_quantile random draws from each quantile bin of its non-zero values."""
    starts, ends = sorted_codes["starts"], sorted_codes["ends"]
    fires = ends - starts
    feats = np.arange(len(fires))
    take = np.minimum(fires, n_top)
    f_top = np.repeat(feats, take)
    j = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    top = pl.DataFrame(
        {"feature": f_top, "kind": pl.Series(["top"] * len(f_top), dtype=pl.Utf8), "rank": j, "at": ends[f_top] - 1 - j}
    )
    rng = np.random.default_rng(seed)
    parts = [top]
    for b in range(n_quantiles):
        lo = starts + fires * b // n_quantiles
        hi = starts + fires * (b + 1) // n_quantiles
        ok = feats[hi > lo]
        for _ in range(per_quantile):
            at = lo[ok] + (rng.random(len(ok)) * (hi[ok] - lo[ok])).astype(np.int64)
            parts.append(
                pl.DataFrame(
                    {
                        "feature": ok,
                        "kind": pl.Series(["quantile"] * len(ok), dtype=pl.Utf8),
                        "rank": np.full(len(ok), b),
                        "at": at,
                    }
                )
            )
    frame = pl.concat(
        [
            p.with_columns(pl.col("feature").cast(pl.Int32), pl.col("rank").cast(pl.Int32), pl.col("at").cast(pl.Int64))
            for p in parts
        ]
    )
    return frame.unique(["feature", "kind", "at"], maintain_order=True)


def examples_table(
    codes: Codes,
    sorted_codes: dict,
    positions: pl.DataFrame,
    tokens: pl.DataFrame,
    window: int,
    extra: dict | None = None,
) -> pl.DataFrame:
    """One row per example: its token in context and the feature's activation on every window token.
    `extra`: {column: fn(rows, features) -> values}, more per-token values of every window (a list
    column each, beside ``acts``)."""
    at = positions["at"].to_numpy()
    feature = positions["feature"].to_numpy()
    row = sorted_codes["row"][at].astype(np.int64)
    doc = tokens["doc_id"].to_numpy()
    doc_start, doc_end = _sequence_bounds(tokens["pos"].to_numpy() == 0)  # a window's context stays in it
    lo = np.maximum(row - window, doc_start[row])
    hi = np.minimum(np.minimum(row + window + 1, doc_end[row]), codes.n_rows)  # only rows that were encoded
    length = hi - lo
    example = np.repeat(np.arange(len(row)), length)
    window_row = np.repeat(lo, length) + np.arange(length.sum()) - np.repeat(np.cumsum(length) - length, length)
    acts = codes.lookup(window_row, np.repeat(feature, length))
    more = {name: fn(window_row, np.repeat(feature, length)) for name, fn in (extra or {}).items()}
    flat = pl.DataFrame({"example": example, "token": tokens["token"].gather(window_row), "act": acts, **more})
    windows = flat.group_by("example", maintain_order=True).agg(
        pl.col("token").alias("tokens"), pl.col("act").alias("acts"), *(pl.col(name) for name in more)
    )
    return positions.drop("at").with_columns(
        pl.Series("row", row),
        pl.Series("doc_id", doc[row]),
        pl.Series("pos", tokens["pos"].to_numpy()[row]),
        pl.Series("activation", sorted_codes["value"][at]),
        pl.Series("center", (row - lo).astype(np.int32)),
        windows["tokens"],
        windows["acts"],
        *(windows[name] for name in more),
    )


def precise_union(codes: Codes, table: pl.DataFrame, tokens: pl.DataFrame, concept: str, min_precision: float) -> dict:
    """How a concept is split over features: the features whose precision for it is at least
    `min_precision`, and the recall and precision of "any of them fires"."""
    precise = table.filter(pl.col(f"precision:{concept}") >= min_precision)["feature"].to_numpy()
    member = tokens["concepts"][: codes.n_rows].list.contains(concept).to_numpy()
    rows = np.unique(codes.row[np.isin(codes.feature, precise)])
    return {
        "precise_features": int(len(precise)),
        "precise_union_recall": float(member[rows].sum() / max(member.sum(), 1)),
        "precise_union_precision": float(member[rows].mean()) if len(rows) else 0.0,
    }


def _sequence_bounds(new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first row of its sequence (a document, or a window of one) and one past the last;
    `new` marks each sequence's first row (rows of a sequence are contiguous)."""
    new = new.copy()
    if len(new):
        new[0] = True
    first = np.flatnonzero(new)
    last = np.r_[first[1:], len(new)]
    idx = np.cumsum(new) - 1
    return first[idx], last[idx]


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
