"""Stage `tokenize`: one tokens table per (model, dataset, split).

Every later stage (fine-tuning, extraction, similarity) reads its inputs from
this table, so every layer and both variants index exactly the same token
rows. One row per kept token, padding never appears:

    row, doc_id, pos, token_id, token, label, is_special, concepts

`concepts` lists the planted concepts whose character span overlaps the
token's character offsets (built-in datasets; empty elsewhere).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from workflow import io, models

log = logging.getLogger(__name__)

TOKENS_SCHEMA = {
    "row": pl.Int64,
    "doc_id": pl.Int64,
    "pos": pl.Int32,
    "token_id": pl.Int32,
    "token": pl.Utf8,
    "label": pl.Int32,
    "is_special": pl.Boolean,
    "concepts": pl.List(pl.Utf8),
}


def _concepts_of(offsets, spans) -> list[list[str]]:
    """Concept names per token: those whose span overlaps the token's (start, end)."""
    out = []
    for start, end in offsets:
        names = [] if end <= start else [s["concept"] for s in spans if s["start"] < end and start < s["end"]]
        out.append(sorted(set(names)))
    return out


def tokenize_table(data: pl.DataFrame, tokenizer, max_length: int) -> pl.DataFrame:
    texts = data["text"].to_list()
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    all_spans = data["spans"].to_list() if "spans" in data.columns else [[]] * len(data)
    columns = {k: [] for k in TOKENS_SCHEMA}
    for i, (doc_id, label) in enumerate(zip(data["id"].to_list(), data["label"].to_list())):
        ids = enc["input_ids"][i]
        concepts = _concepts_of(enc["offset_mapping"][i], all_spans[i] or [])
        columns["doc_id"] += [doc_id] * len(ids)
        columns["pos"] += list(range(len(ids)))
        columns["token_id"] += ids
        columns["token"] += tokenizer.convert_ids_to_tokens(ids)
        columns["label"] += [label] * len(ids)
        columns["is_special"] += [bool(m) for m in enc["special_tokens_mask"][i]]
        columns["concepts"] += concepts
    columns["row"] = list(range(len(columns["doc_id"])))
    return pl.DataFrame(columns, schema=TOKENS_SCHEMA)


def run(data_path: str, model_source: str, max_length: int, out_path: str) -> pl.DataFrame:
    started = time.perf_counter()
    data = pl.read_parquet(data_path)
    tokenizer = models.load_tokenizer(models.resolve_source(model_source))
    table = tokenize_table(data, tokenizer, max_length)
    io.write_parquet(table, out_path)
    seconds = time.perf_counter() - started
    truncated = int((table.group_by("doc_id").len()["len"] >= max_length).sum())
    log.info(
        "%s: %d documents -> %d tokens (%d truncated at %d) in %.1f s",
        out_path, len(data), len(table), truncated, max_length, seconds,
    )
    return table


# ------------------------------------------------------------ reading back


@dataclass
class Documents:
    """Documents of a tokens table in row order: doc i covers rows offsets[i]:offsets[i+1]."""

    token_ids: list[np.ndarray]
    labels: np.ndarray
    offsets: np.ndarray  # (n_docs + 1,)
    special: list[np.ndarray]  # per document, which tokens are special ([CLS], [SEP], ...)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def sample(self, max_docs: int | None = None, max_tokens: int | None = None, seed: int = 0) -> "Documents":
        """A seeded random subset of at most `max_docs` documents and `max_tokens`
        tokens (at least one document), kept in table order."""
        order = np.random.default_rng(seed).permutation(len(self.token_ids))
        if max_docs is not None:
            order = order[:max_docs]
        if max_tokens is not None:
            lengths = np.cumsum([len(self.token_ids[i]) for i in order])
            order = order[: max(1, int(np.searchsorted(lengths, max_tokens, side="right")))]
        return self.subset(np.sort(order))

    def subset(self, keep) -> "Documents":
        """The documents at positions `keep`, in that order."""
        token_ids = [self.token_ids[i] for i in keep]
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in token_ids])]).astype(np.int64)
        return Documents(token_ids, self.labels[keep], offsets, [self.special[i] for i in keep])


def read_documents(tokens_path: str | Path) -> Documents:
    table = pl.read_parquet(tokens_path, columns=["doc_id", "token_id", "label", "row", "is_special"])
    if not table["row"].equals(pl.Series("row", range(len(table)), dtype=pl.Int64)):
        raise ValueError(f"{tokens_path}: rows are not 0..n-1 in order")
    lengths = table.group_by("doc_id", maintain_order=True).len()["len"].to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = table["token_id"].to_numpy()
    labels = table["label"].to_numpy()[offsets[:-1]]
    special = table["is_special"].to_numpy()
    spans = list(zip(offsets[:-1], offsets[1:]))
    return Documents([ids[a:b] for a, b in spans], labels, offsets, [special[a:b] for a, b in spans])


def batches(docs: Documents, batch_size: int, pad_id: int, order=None) -> Iterator[tuple[np.ndarray, dict]]:
    """Yield (doc indices, model inputs) with right padding; `order` permutes documents."""
    import torch

    order = np.arange(len(docs.token_ids)) if order is None else np.asarray(order)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(docs.token_ids[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for j, i in enumerate(idx):
            n = len(docs.token_ids[i])
            input_ids[j, :n] = torch.from_numpy(docs.token_ids[i].astype(np.int64))
            mask[j, :n] = 1
        yield idx, {"input_ids": input_ids, "attention_mask": mask}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow tokenize", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset split parquet")
    parser.add_argument("--model", required=True, help="model source (folder, hub id or package:NAME)")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run(args.data, args.model, args.max_length, args.out)
