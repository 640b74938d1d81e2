"""Ablating every attention head: our batched ablation against one full forward per head.

Both zero-ablate every head of a random-weight model of a real size (bert-base:
12 blocks x 12 heads; gpt2: 12 x 12) on the same random documents and measure
the classifier's loss. Ours (`ablation.head_effects`) starts each block's
ablations from the clean pass's cached block input and stacks several
ablations as copies of the batch in one forward; the naive loop
(``tests/references.py``'s `naive_head_effects`) runs the whole model once per head. The
two results are checked to agree before the times are printed.

    python benchmarks/heads.py                                  # bert-base on the CPU, 8 docs x 64 tokens
    python benchmarks/heads.py --model gpt2 --device cuda --docs 64 --tokens 128 --max-rows 1024
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the reference lives in tests/
from tests.references import naive_head_effects
from workflow.analysis import ablation
from workflow.store.tokens import Documents

CONFIGS = {
    "bert-base": (
        "bert",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, vocab_size=30522),
    ),
    "gpt2": ("gpt2", dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257)),
}


def build(name: str, device):
    from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

    family, kwargs = CONFIGS[name]
    torch.manual_seed(0)
    if family == "bert":
        model = BertForSequenceClassification(BertConfig(**kwargs, num_labels=2))
    else:
        model = GPT2ForSequenceClassification(GPT2Config(**kwargs, num_labels=2, pad_token_id=0))
    return model.to(device).eval()


def documents(n: int, length: int, vocab: int, seed: int = 0) -> Documents:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, vocab, length) for _ in range(n)]
    offsets = np.arange(n + 1, dtype=np.int64) * length
    return Documents(ids, rng.integers(0, 2, n), offsets, [np.zeros(length, bool) for _ in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="bert-base")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per document")
    parser.add_argument("--batch-size", type=int, default=8, help="documents per forward")
    parser.add_argument("--max-rows", type=int, default=256, help="rows per batched forward (documents x copies)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    device = torch.device(args.device)
    model = build(args.model, device)
    if args.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    docs = documents(args.docs, args.tokens, model.config.vocab_size)
    n_heads = model.config.num_attention_heads * model.config.num_hidden_layers

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    measure = ablation.task_measure
    timed(
        lambda: ablation.head_effects(model, documents(2, 8, 100), measure, ["zero"], None, 2, 8, 0, device)
    )  # warm-up
    (clean, ours), t_ours = timed(
        lambda: ablation.head_effects(model, docs, measure, ["zero"], None, args.batch_size, args.max_rows, 0, device)
    )
    (_, naive), t_naive = timed(
        lambda: naive_head_effects(model, docs, measure, ["zero"], None, args.batch_size, 0, device)
    )
    tol = 1e-3 if args.dtype == "float32" else 5e-2
    err = float(np.abs(ours - naive).max() / max(1.0, np.abs(naive).max()))
    if err > tol:
        raise SystemExit(f"batched and naive ablations disagree: relative error {err:.2e}")
    print(
        f"{args.model} ({args.dtype}) on {device}, {torch.get_num_threads()} CPU threads: zero-ablating "
        f"{n_heads} heads, {args.docs} documents x {args.tokens} tokens"
    )
    print(f"  naive (one full forward per head): {t_naive:8.2f} s")
    print(f"  batched from cached block inputs:  {t_ours:8.2f} s   (max_rows {args.max_rows})")
    print(f"  ratio naive / batched: {t_naive / t_ours:.2f}x   (results agree to {err:.1e})")


if __name__ == "__main__":
    main()
