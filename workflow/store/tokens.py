"""Tokens tables: the schema every later stage indexes by row, and reading them back.

One row per kept token, padding never appears::

    row, doc_id, window, pos, token_id, token, label, is_special, concepts

Row i of every activation set of a (model, dataset, split) is row i of its tokens
table, for both variants and every layer. `read_documents` gives the documents in
table order; `batches` pads them into model inputs. `encode` is how a text becomes the rows of
a table (truncation, windows, BOS), for the tokens stage and for whatever must count or repeat it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

TOKENS_SCHEMA = {
    "row": pl.Int64,
    "doc_id": pl.Int64,
    "window": pl.Int32,  # the window of the document (0 unless tokenize.stride splits long documents)
    "pos": pl.Int32,
    "token_id": pl.Int32,
    "token": pl.Utf8,
    "label": pl.Int32,
    "is_special": pl.Boolean,
    "concepts": pl.List(pl.Utf8),
}


def with_bos(enc, bos_id: int, max_length: int) -> None:
    """Open every encoded document with `bos_id` where the tokenizer did not (truncating to `max_length`)."""
    for i, ids in enumerate(enc["input_ids"]):
        if ids and ids[0] == bos_id:
            continue
        enc["input_ids"][i] = [bos_id, *ids][:max_length]
        enc["offset_mapping"][i] = [(0, 0), *enc["offset_mapping"][i]][:max_length]
        enc["special_tokens_mask"][i] = [1, *enc["special_tokens_mask"][i]][:max_length]


def encode(tokenizer, texts: list[str], max_length: int, own_specials: bool, bos: bool, stride: int | None):
    """(encodings, the document of each, tokens each document lost): one encoding per document,
    truncated; or, with `stride`, one per window of max_length tokens overlapping by `stride`.
    `own_specials`: the tokenizer adds its special tokens; `bos`: each sequence opens with the BOS
    token (`with_bos`). The tokens stage, the estimate and the explorer tokenize through this."""
    bos_id = tokenizer.bos_token_id if bos else None
    windows = {} if stride is None else {"return_overflowing_tokens": True, "stride": stride}
    # a window keeps room for a BOS that with_bos adds below (where the tokenizer does not add it)
    room = int(stride is not None and bos_id is not None and tokenizer("x")["input_ids"][:1] != [bos_id])
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length - room,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        add_special_tokens=own_specials,
        **windows,
    )
    added = [bos_id is not None and ids[:1] != [bos_id] for ids in enc["input_ids"]]  # BOS with_bos adds
    if bos_id is not None:
        with_bos(enc, bos_id, max_length)
    if stride is None:  # what the document lost: its untruncated length less what it kept of its own
        full = tokenizer(texts, add_special_tokens=own_specials, verbose=False)["input_ids"]
        cut = [max(0, len(f) - (len(ids) - a)) for f, ids, a in zip(full, enc["input_ids"], added)]
        sample = range(len(texts))
    else:  # windows cover every token
        cut, sample = [0] * len(texts), list(enc["overflow_to_sample_mapping"])
    return enc, sample, cut


@dataclass
class Documents:
    """Documents of a tokens table in row order: doc i covers rows offsets[i]:offsets[i+1]. Where
    tokenize.stride splits long documents, each window is one of these sequences (`doc_ids` repeats
    across a document's windows, `windows` numbers them)."""

    token_ids: list[np.ndarray]
    labels: np.ndarray
    offsets: np.ndarray  # (n_docs + 1,)
    special: list[np.ndarray]  # per document, which tokens are special ([CLS], [SEP], ...)
    doc_ids: np.ndarray | None = None  # (n_docs,) the tokens table's doc_id of each document
    windows: np.ndarray | None = None  # (n_docs,) the window of its document each one is (None: 0)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    def sample(self, max_docs: int | None = None, max_tokens: int | None = None, seed: int = 0) -> Documents:
        """A seeded random subset of at most `max_docs` documents and `max_tokens`
        tokens (at least one document), kept in table order."""
        order = np.random.default_rng(seed).permutation(len(self.token_ids))
        if max_docs is not None:
            order = order[:max_docs]
        if max_tokens is not None:
            lengths = np.cumsum([len(self.token_ids[i]) for i in order])
            order = order[: max(1, int(np.searchsorted(lengths, max_tokens, side="right")))]
        return self.subset(np.sort(order))

    def subset(self, keep) -> Documents:
        """The documents at positions `keep`, in that order."""
        token_ids = [self.token_ids[i] for i in keep]
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in token_ids])]).astype(np.int64)
        doc_ids = None if self.doc_ids is None else self.doc_ids[keep]
        windows = None if self.windows is None else self.windows[keep]
        return Documents(token_ids, self.labels[keep], offsets, [self.special[i] for i in keep], doc_ids, windows)

    def first_windows(self) -> Documents:
        """Each document's first window only (all of them where documents are not windowed)."""
        if self.windows is None:
            return self
        return self.subset(np.flatnonzero(self.windows == 0))


def read_documents(tokens_path: str | Path) -> Documents:
    """The sequences of a tokens table: one per document, or per window where documents are windowed."""
    names = pl.read_parquet_schema(tokens_path)
    columns = ["doc_id", "token_id", "label", "row", "is_special", *(["window"] if "window" in names else [])]
    table = pl.read_parquet(tokens_path, columns=columns)
    if not table["row"].equals(pl.Series("row", range(len(table)), dtype=pl.Int64)):
        raise ValueError(f"{tokens_path}: rows are not 0..n-1 in order")
    keys = ["doc_id", "window"] if "window" in names else ["doc_id"]
    lengths = table.group_by(keys, maintain_order=True).len()["len"].to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = table["token_id"].to_numpy()
    labels = table["label"].to_numpy()[offsets[:-1]]
    special = table["is_special"].to_numpy()
    spans = list(zip(offsets[:-1], offsets[1:]))
    doc_ids = table["doc_id"].to_numpy()[offsets[:-1]]
    windows = table["window"].to_numpy()[offsets[:-1]] if "window" in names else None
    return Documents([ids[a:b] for a, b in spans], labels, offsets, [special[a:b] for a, b in spans], doc_ids, windows)


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


def length_order(docs: Documents) -> np.ndarray:
    """Document positions sorted by length (stable): batches carry little padding."""
    return np.argsort([len(t) for t in docs.token_ids], kind="stable")


def labelled_batches(docs: Documents, batch_size: int, pad_id: int, device):
    """(doc indices, inputs, labels) on `device`, documents sorted by length; for statistics that
    do not depend on the order of the documents."""
    import torch

    for idx, inputs in batches(docs, batch_size, pad_id, length_order(docs)):
        inputs = {k: v.to(device) for k, v in inputs.items()}
        yield idx, inputs, torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)
