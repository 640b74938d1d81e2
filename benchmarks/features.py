"""Feature tables in one streaming pass, against one SAE encode pass over the same tokens.

A random-weight TopK SAE (d_in 768, 24,576 latents, k 32: the width of a 32x
bert-base SAE) over a synthetic activation set with a synthetic tokens table
(documents of 128 tokens, 2 classes, 2 planted concepts, bert-base vocabulary).
Timed: (a) one encode pass (`sae.encode` over every batch, codes discarded);
(b) the whole `features` computation: that encode pass keeping the non-zero
codes, then per-feature statistics, top tokens, AUROC, concept F1, example
selection and example windows. Goal: (b) <= 3 x (a).

    python benchmarks/features.py                    # 1M tokens (about 1.5 GB of float16 activations in a temp dir)
    python benchmarks/features.py --tokens 200000    # quicker
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sae import synthetic_set  # benchmarks/sae.py (the script folder is on sys.path)

from workflow.analysis import features as feature_stats
from workflow.sae import architecture, recipe_from_dict
from workflow.sae.codes import encode_batches, sparse_codes
from workflow.store.activations import ActivationSet

CFG = {"top_tokens": 5, "min_token_count": 3, "n_top": 20, "n_quantiles": 5, "per_quantile": 2, "window": 8, "seed": 0}


def synthetic_tokens(rows: int, doc_len: int = 128, vocab: int = 30522, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n_docs = -(-rows // doc_len)
    token_ids = rng.integers(0, vocab, rows)
    concept = rng.choice(3, rows, p=[0.9, 0.05, 0.05])
    names = np.array([[], ["a"], ["b"]], dtype=object)
    return pl.DataFrame(
        {
            "row": np.arange(rows),
            "doc_id": np.repeat(np.arange(n_docs), doc_len)[:rows],
            "window": np.zeros(rows, int),
            "pos": np.tile(np.arange(doc_len), n_docs)[:rows],
            "token_id": token_ids,
            "token": pl.Series(token_ids).cast(pl.Utf8),
            "label": np.repeat(rng.integers(0, 2, n_docs), doc_len)[:rows],
            "is_special": np.zeros(rows, bool),
            "concepts": [list(names[c]) for c in concept],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=24576)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-rows", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sae = architecture("topk")(args.d_in, args.d_sae, recipe_from_dict({"architecture": "topk", "k": args.k}))
    sae.initialise(torch.Generator().manual_seed(0))
    sae.eval()
    tokens = synthetic_tokens(args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_set(Path(tmp) / "acts", args.tokens, args.d_in)
        aset = ActivationSet(Path(tmp) / "acts")
        for _ in encode_batches(sae, aset, args.batch_rows * 2, args.batch_rows):
            pass  # warm-up
        t0 = time.perf_counter()
        for _ in encode_batches(sae, aset, None, args.batch_rows):
            pass
        encode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        codes = sparse_codes(sae, aset, None, args.batch_rows)
        coded_s = time.perf_counter() - t0
        table, extra = feature_stats.feature_table(
            codes, tokens, ["neg", "pos"], ["a", "b"], CFG["top_tokens"], CFG["min_token_count"]
        )
        positions = feature_stats.example_positions(
            extra["sorted"], CFG["n_top"], CFG["n_quantiles"], CFG["per_quantile"], CFG["seed"]
        )
        examples = feature_stats.examples_table(codes, extra["sorted"], positions, tokens, CFG["window"])
        features_s = time.perf_counter() - t0
    print(
        f"{args.tokens:,} tokens, d_in {args.d_in}, d_sae {args.d_sae:,}, k {args.k}, {torch.get_num_threads()} threads"
    )
    print(f"one encode pass:            {encode_s:8.1f} s")
    print(
        f"features (encode + tables): {features_s:8.1f} s  (encode keeping codes {coded_s:.1f} s; "
        f"{len(table):,} features, {len(examples):,} examples)"
    )
    print(f"ratio: {features_s / encode_s:.2f} (goal <= 3)")


if __name__ == "__main__":
    main()
