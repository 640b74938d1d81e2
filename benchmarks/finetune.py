"""LM fine-tuning throughput: the finetune stage's trainer against a plain transformers training loop.

A random-weight GPT-2 small (124M; speed does not depend on the weights) is fine-tuned with next-token
loss on random token ids, documents of `--length` tokens, by

- ours: `workflow.models.training.train` with `next_token_loss` (the causal_lm kind), full or LoRA
  (`with_lora`, the family's default targets, r 8): the LM head fused with the loss (chunked, only
  the positions that predict a token; `workflow.models.lm.next_token_loss`) and the fused AdamW;
- plain: the loop every transformers tutorial writes: `model(input_ids, attention_mask, labels=...)`,
  `loss.backward()`, gradient clipping, AdamW and a linear schedule, on the same batches in the
  same order. `--plain-fused-adamw` gives it the fused AdamW too, which leaves the fused head as
  the only difference.

Both run in the same process, alternating, each on a fresh model, after a warm-up; medians of the
repeats are compared. Prints tokens/s of each and their ratio (goal >= 1.0).

    python benchmarks/finetune.py                 # CPU here, CUDA where present
    python benchmarks/finetune.py --docs 512 --batch-size 16 --length 512   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup

from workflow.models import loading, training
from workflow.models.finetuning import with_lora
from workflow.store.tokens import Documents, batches

CFG = {"epochs": 1, "lr": 1e-4, "weight_decay": 0.01, "warmup_fraction": 0.1, "max_grad_norm": 1.0, "seed": 0,
       "log_every": 1000}  # fmt: skip
LORA = {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["c_attn", "attn.c_proj"]}


def random_docs(n: int, length: int, vocab: int) -> Documents:
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, vocab, length) for _ in range(n)]
    offsets = np.arange(n + 1, dtype=np.int64) * length
    return Documents(ids, np.zeros(n, dtype=np.int64), offsets, [np.zeros(length, bool)] * n, np.arange(n))


def fresh(base, method: str):
    model = copy.deepcopy(base)
    return with_lora(model, "gpt2", LORA, "causal") if method == "lora" else model


def ours(model, docs, cfg, device, amp) -> float:
    out = training.train(model, docs, cfg, 0, device, amp, training.next_token_loss)
    return out["tokens"] / out["seconds"]


def plain(model, docs, cfg, device, amp, fused: bool = False) -> float:
    """The same batches in the same order as `finetune.train`, through the model's own loss."""
    rng = np.random.default_rng(cfg["seed"])
    order = training.length_bucketed_order(docs, cfg["batch_size"], rng)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=fused or None)
    total = math.ceil(len(docs.token_ids) / cfg["batch_size"])
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
    model.train()
    tokens, started = 0, time.perf_counter()
    for _, inputs in batches(docs, cfg["batch_size"], 0, order):
        inputs = {k: v.to(device) for k, v in inputs.items()}
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"])
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(inputs["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=48, help="documents per timed run")
    parser.add_argument("--length", type=int, default=128, help="tokens per document")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--bf16", default="false", choices=["auto", "true", "false"], help="autocast, as finetune.bf16")
    parser.add_argument("--plain-fused-adamw", action="store_true", help="the plain loop uses the fused AdamW too")
    args = parser.parse_args()
    device = loading.pick_device()
    amp = loading.autocast_dtype({"true": True, "false": False}.get(args.bf16, args.bf16), device)
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config()).to(device)  # GPT-2 small: 12 x 768, 124M parameters
    base.config.use_cache = False
    docs = random_docs(args.docs, args.length, base.config.vocab_size)
    cfg = {**CFG, "batch_size": args.batch_size}
    warm = random_docs(2 * args.batch_size, args.length, base.config.vocab_size)
    print(f"device: {loading.describe_device(device)}; autocast {amp}; {args.docs} docs x {args.length} tokens, "
          f"batch {args.batch_size}, GPT-2 small (random weights); plain AdamW "
          f"{'fused' if args.plain_fused_adamw else 'default'}")  # fmt: skip
    for method in args.methods:
        ours(fresh(base, method), warm, cfg, device, amp)  # warm-up of both paths
        plain(fresh(base, method), warm, cfg, device, amp, args.plain_fused_adamw)
        ours_rates, plain_rates = [], []
        for _ in range(args.repeats):
            ours_rates.append(ours(fresh(base, method), docs, cfg, device, amp))
            plain_rates.append(plain(fresh(base, method), docs, cfg, device, amp, args.plain_fused_adamw))
        a, b = statistics.median(ours_rates), statistics.median(plain_rates)
        print(f"{method:5s} ours {a:8.0f} tokens/s  plain transformers loop {b:8.0f} tokens/s  ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
