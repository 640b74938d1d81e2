"""Stage `tokens`: one tokens table per (model, dataset, split).

Every later stage (fine-tuning, extraction, similarity) reads its inputs from
this table, so every layer and both variants index exactly the same token
rows. One row per kept token, padding never appears:

    row, doc_id, pos, token_id, token, label, is_special, concepts

`concepts` lists the planted concepts whose character span overlaps the
token's character offsets (built-in datasets; empty elsewhere). Special tokens
([CLS], [SEP], BOS) are marked `is_special`. Decoders whose family expects a BOS
token (Llama, Mistral, Gemma) get one where their tokenizer did not add it;
decoders without a padding token pad with their end-of-text token (padding is
masked out everywhere and never stored).
"""

from __future__ import annotations

import logging
import time

import polars as pl

from workflow import cli
from workflow.models.families import FAMILIES, model_family
from workflow.models.loading import load_tokenizer
from workflow.models.sources import read_model_config, resolve_source
from workflow.store.files import write_parquet
from workflow.store.tokens import TOKENS_SCHEMA

log = logging.getLogger(__name__)


def _concepts_of(offsets, spans) -> list[list[str]]:
    """Concept names per token: those whose span overlaps the token's (start, end)."""
    out = []
    for start, end in offsets:
        names = [] if end <= start else [s["concept"] for s in spans if s["start"] < end and start < s["end"]]
        out.append(sorted(set(names)))
    return out


def with_bos(enc, bos_id: int, max_length: int) -> None:
    """Open every encoded document with `bos_id` where the tokenizer did not (truncating to `max_length`)."""
    for i, ids in enumerate(enc["input_ids"]):
        if ids and ids[0] == bos_id:
            continue
        enc["input_ids"][i] = [bos_id, *ids][:max_length]
        enc["offset_mapping"][i] = [(0, 0), *enc["offset_mapping"][i]][:max_length]
        enc["special_tokens_mask"][i] = [1, *enc["special_tokens_mask"][i]][:max_length]


def tokenize_table(data: pl.DataFrame, tokenizer, max_length: int, bos: bool = False) -> pl.DataFrame:
    """The tokens table of a dataset split; `bos`: make sure each document opens with the BOS token."""
    texts = data["text"].to_list()
    enc = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    if bos and tokenizer.bos_token_id is not None:
        with_bos(enc, tokenizer.bos_token_id, max_length)
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
    source = resolve_source(model_source)
    tokenizer = load_tokenizer(source)
    fam = FAMILIES[model_family(read_model_config(source))]
    table = tokenize_table(data, tokenizer, max_length, bos=fam.causal and fam.prepend_bos)
    write_parquet(table, out_path)
    seconds = time.perf_counter() - started
    truncated = int((table.group_by("doc_id").len()["len"] >= max_length).sum())
    log.info(
        "%s: %d documents -> %d tokens (%d truncated at %d) in %.1f s",
        out_path,
        len(data),
        len(table),
        truncated,
        max_length,
        seconds,
    )
    return table


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--data", required=True, help="dataset split parquet")
    parser.add_argument("--model", required=True, help="model source (folder, hub id or package:NAME)")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run(args.data, args.model, args.max_length, args.out)
