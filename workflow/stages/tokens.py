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

This module loads and writes; `workflow.datasets.tokenize` builds the table.
"""

from __future__ import annotations

import logging
import time

import polars as pl

from workflow.datasets.tokenize import tokenize_table, truncation
from workflow.models.families import FAMILIES, model_family
from workflow.models.loading import load_tokenizer
from workflow.models.sources import read_model_config, resolve_source
from workflow.runner import cli
from workflow.store.files import write_json, write_parquet

log = logging.getLogger(__name__)


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
    `truncation_out`: where the truncation summary goes (`workflow.datasets.tokenize.truncation`)."""
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
