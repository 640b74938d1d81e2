"""A dataset split as a tokens table (`workflow.store.tokens.TOKENS_SCHEMA`): stage `tokens`.

A split (``id``, ``text``, ``label``, optional ``spans`` of planted concepts and ``response``) is
encoded by `workflow.store.tokens.encode` (truncation, windows, BOS) into one row per kept token.
Each token lists the planted concepts whose character span overlaps its offsets; with a chat
template, each document is first formatted as a user turn (and its ``response`` as the
assistant's), and the tokens the template adds are marked ``is_special``. `truncation` sums up
what truncation cut from the split, for the report's warning.
"""

from __future__ import annotations

import polars as pl

from workflow.store.tokens import TOKENS_SCHEMA, encode


def _concepts_of(offsets, spans) -> list[list[str]]:
    """Concept names per token: those whose span overlaps the token's (start, end)."""
    out = []
    for start, end in offsets:
        names = [] if end <= start else [s["concept"] for s in spans if s["start"] < end and start < s["end"]]
        out.append(sorted(set(names)))
    return out


def chat_format(data: pl.DataFrame, template) -> tuple[list[str], list[list[tuple[int, int]]], list[int]]:
    """Each document through `template`'s chat template (a tokenizer): the text as the user turn, and
    the ``response`` column, where there is one, as the assistant's reply (else the prompt for one).
    Returns the formatted strings, the character spans of the documents' own text inside each, and
    where the user text starts (planted-concept spans move by that much)."""
    responses = data["response"].to_list() if "response" in data.columns else [None] * len(data)
    formatted, content, shifts = [], [], []
    for text, response in zip(data["text"].to_list(), responses):
        messages = [{"role": "user", "content": text}]
        if response:
            messages.append({"role": "assistant", "content": response})
        out = template.apply_chat_template(messages, tokenize=False, add_generation_prompt=not response)
        start = out.find(text)
        if start < 0:
            raise ValueError(f"the chat template changed the text of a document: {text[:60]!r}")
        spans = [(start, start + len(text))]
        if response:
            at = out.find(response, start + len(text))
            spans.append((at, at + len(response)))
        formatted.append(out)
        content.append(spans)
        shifts.append(start)
    return formatted, content, shifts


def _outside(offsets, spans) -> list[bool]:
    """Per token: whether it overlaps none of the spans (a token the chat template added; a token that
    carries any of the document's characters, such as BPE's space-prefixed first word, is the document's)."""
    return [end <= start or not any(start < b and a < end for a, b in spans) for start, end in offsets]


def tokenize_table(
    data: pl.DataFrame, tokenizer, max_length: int, bos: bool = False, template=None, stride: int | None = None
) -> tuple[pl.DataFrame, list[int]]:
    """The tokens table of a dataset split, and the tokens each document lost to truncation; `bos`:
    make sure each document (window) opens with the BOS token; `template`: a tokenizer whose chat
    template formats each document first (`chat_format`), the tokens it adds marked `is_special`;
    `stride`: split long documents into windows (`workflow.store.tokens.encode`) instead of truncating them."""
    texts = data["text"].to_list()
    content = shifts = None
    if template is not None:
        texts, content, shifts = chat_format(data, template)
    enc, sample, cut = encode(tokenizer, texts, max_length, template is None, bos, stride)
    if content is not None:
        enc["special_tokens_mask"] = [
            [int(m or o) for m, o in zip(mask, _outside(offsets, content[d]))]
            for mask, offsets, d in zip(enc["special_tokens_mask"], enc["offset_mapping"], sample)
        ]
    all_spans = data["spans"].to_list() if "spans" in data.columns else [[]] * len(data)
    if shifts is not None:
        all_spans = [
            [{**s, "start": s["start"] + k, "end": s["end"] + k} for s in spans or []]
            for spans, k in zip(all_spans, shifts)
        ]
    doc_ids, labels = data["id"].to_list(), data["label"].to_list()
    columns = {k: [] for k in TOKENS_SCHEMA}
    window = 0
    for i, d in enumerate(sample):
        window = window + 1 if i and sample[i - 1] == d else 0
        ids = enc["input_ids"][i]
        columns["doc_id"] += [doc_ids[d]] * len(ids)
        columns["window"] += [window] * len(ids)
        columns["pos"] += list(range(len(ids)))
        columns["token_id"] += ids
        columns["token"] += tokenizer.convert_ids_to_tokens(ids)
        columns["label"] += [labels[d]] * len(ids)
        columns["is_special"] += [bool(m) for m in enc["special_tokens_mask"][i]]
        columns["concepts"] += _concepts_of(enc["offset_mapping"][i], all_spans[d] or [])
    columns["row"] = list(range(len(columns["doc_id"])))
    return pl.DataFrame(columns, schema=TOKENS_SCHEMA), cut


def truncation(cut: list[int], n_kept: int, max_length: int, stride: int | None = None) -> dict:
    """How much truncation cut from a split (documents and tokens); the report warns above
    tokenize.truncation_warning (`workflow.report.sections.truncation`)."""
    n_cut = sum(cut)
    return {
        "max_length": max_length,
        "stride": stride,
        "documents": len(cut),
        "documents_truncated": sum(c > 0 for c in cut),
        "tokens_kept": n_kept,
        "tokens_cut": n_cut,
        "cut_share": n_cut / max(1, n_cut + n_kept),
    }
