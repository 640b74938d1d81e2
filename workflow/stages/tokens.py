"""Stage `tokens`: one tokens table per (model, dataset, split).

Every later stage (fine-tuning, extraction, similarity) reads its inputs from
this table, so every layer and both variants index exactly the same token
rows. One row per kept token, padding never appears:

    row, doc_id, window, pos, token_id, token, label, is_special, concepts

`window` is 0 unless `tokenize.stride` is set: then a document longer than `max_length`
becomes several windows of at most `max_length` tokens, each overlapping the one before by
`stride` tokens and each a sequence of its own (with the tokenizer's special tokens) that every
stage reads as it reads a document: fine-tuning trains on every window with the document's
label, classifier evaluation averages a document's windows' logits, and `doc_id` and `pos`
(within the window) say where each token came from.

`concepts` lists the planted concepts whose character span overlaps the
token's character offsets (built-in datasets; empty elsewhere). Special tokens
([CLS], [SEP], BOS) are marked `is_special`. With a model's ``chat_template``,
each document is first formatted by the tokenizer's chat template (the text as
the user turn, a ``response`` column as the assistant's reply), and every token
the template adds (role headers, turn markers) is marked `is_special` too. Decoders whose family expects a BOS
token (Llama, Mistral, Gemma) get one where their tokenizer did not add it;
decoders without a padding token pad with their end-of-text token (padding is
masked out everywhere and never stored).

Beside the table, ``<split>.json`` says how much truncation cut: documents cut, tokens
kept, tokens cut (counted on the untruncated tokenization) and the share of the split's
tokens that is cut. Above `tokenize.truncation_warning` the report warns (that threshold
is the report job's, so changing it re-makes no tokens table).
"""

from __future__ import annotations

import logging
import time

import polars as pl

from workflow.models.families import FAMILIES, model_family
from workflow.models.loading import load_tokenizer
from workflow.models.sources import read_model_config, resolve_source
from workflow.runner import cli
from workflow.store.files import write_json, write_parquet
from workflow.store.tokens import TOKENS_SCHEMA, encode

log = logging.getLogger(__name__)


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


def run(
    data_path: str,
    model_source: str,
    max_length: int,
    out_path: str,
    chat: str | None = None,
    truncation_out: str | None = None,
    stride: int | None = None,
) -> pl.DataFrame:
    """`chat`: the model source whose tokenizer's chat template formats each document (None: none);
    `truncation_out`: where the truncation summary goes (`truncation`)."""
    started = time.perf_counter()
    data = pl.read_parquet(data_path)
    source = resolve_source(model_source)
    tokenizer = load_tokenizer(source)
    fam = FAMILIES[model_family(read_model_config(source))]
    template = None
    if chat:
        chat = resolve_source(chat)
        template = tokenizer if chat == source else load_tokenizer(chat)
    bos = fam.causal and fam.prepend_bos
    log.info("tokenizing %d documents of %s with %s's tokenizer", len(data), data_path, model_source)
    table, lost = tokenize_table(data, tokenizer, max_length, bos=bos, template=template, stride=stride)
    cut = truncation(lost, len(table), max_length, stride)
    cut["windows"] = int(table.select(pl.struct("doc_id", "window").n_unique()).item())
    write_parquet(table, out_path)
    if truncation_out:
        write_json(cut, truncation_out)
    log.info(
        "%s: %d documents -> %d tokens (%d documents truncated at %d, %d tokens cut: %.1f%%) in %.1f s",
        out_path,
        len(data),
        len(table),
        cut["documents_truncated"],
        max_length,
        cut["tokens_cut"],
        100 * cut["cut_share"],
        time.perf_counter() - started,
    )
    return table


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--data", required=True, help="dataset split parquet")
    parser.add_argument("--model", required=True, help="model source (folder, hub id or package:NAME)")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--chat", help="model source whose tokenizer's chat template formats each document")
    parser.add_argument("--truncation", help="where the truncation summary (JSON) goes")
    parser.add_argument("--stride", type=int, help="split long documents into windows overlapping by this many tokens")
    args = parser.parse_args(argv)
    run(
        args.data,
        args.model,
        args.max_length,
        args.out,
        args.chat,
        args.truncation,
        args.stride,
    )
