"""Training from scratch (stage `pretrain`): our trainer against a plain transformers loop on the same batches.

A scratch BERT of the demo's shape (`--layers` x `--d-model`, 2d positions, no dropout) learns
masked tokens of generated boards (the seed study's 8x8 defaults, `--boards` of them):

- ours: `workflow.models.training.train` with `masked_token_loss` (what `pretrain` runs): the
  fused AdamW, transformers' masking collator drawn per step, the logits of the masked cells only
  into the loss;
- plain: the loop a transformers tutorial writes: `DataCollatorForLanguageModeling` on the batch,
  `model(input_ids, attention_mask, labels=...)`, `loss.backward()`, gradient clipping, AdamW and a
  linear schedule, on the same batches in the same order.

Both start from the same untrained model (its 2d position table factorised as `pretrain` does),
run in one process, alternating, after a warm-up; medians of the repeats are compared. Prints
tokens/s of each and their ratio (goal >= 1.0).

    python benchmarks/pretrain.py                         # the demo's model, CPU here, CUDA where present
    python benchmarks/pretrain.py --d-model 128 --layers 4 --boards 8192 --batch-size 256   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time

import numpy as np
import torch
from transformers import DataCollatorForLanguageModeling, get_linear_schedule_with_warmup

from workflow.datasets import abstractions as A
from workflow.models import loading, scratch, training
from workflow.store.tokens import Documents, batches

CFG = {"epochs": 1, "lr": 5e-3, "weight_decay": 0.01, "warmup_fraction": 0.05, "max_grad_norm": 1.0, "seed": 0,
       "log_every": 10**9}  # fmt: skip


def board_docs(tokenizer, n: int) -> Documents:
    """`n` generated boards as the tokens stage would give them ([CLS] cells [SEP])."""
    rows, _ = A.generate(A.DEFAULTS, None, n, 1, 0)
    ids = [np.array(tokenizer(r["text"])["input_ids"]) for r in rows]
    special = [np.isin(i, [scratch.CLS, scratch.SEP]) for i in ids]
    offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids])]).astype(np.int64)
    return Documents(ids, np.array([r["label"] for r in rows]), offsets, special, np.arange(n))


def ours(model, tokenizer, docs, cfg, device, amp) -> float:
    loss_of = training.masked_token_loss(tokenizer, docs, cfg["seed"], cfg["mask_fraction"])
    out = training.train(model, docs, cfg, scratch.PAD, device, amp, loss_of)
    return out["tokens"] / out["seconds"]


def plain(model, tokenizer, docs, cfg, device, amp) -> float:
    """The same batches in the same order as `training.train`, masked by the collator, through the
    model's own loss."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg["mask_fraction"], seed=cfg["seed"])
    order = training.length_bucketed_order(docs, cfg["batch_size"], np.random.default_rng(cfg["seed"]))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    total = math.ceil(len(docs.token_ids) / cfg["batch_size"])
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
    model.train()
    tokens, started = 0, time.perf_counter()
    for _, inputs in batches(docs, cfg["batch_size"], scratch.PAD, order):
        masked = collator.torch_call([{"input_ids": ids} for ids in inputs["input_ids"].tolist()])
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(
                input_ids=masked["input_ids"].to(device),
                attention_mask=inputs["attention_mask"].to(device),
                labels=masked["labels"].to(device),
            ).loss
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
    parser.add_argument("--boards", type=int, default=4096, help="boards per timed run")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--mask-fraction", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16", default="false", choices=["auto", "true", "false"], help="autocast, as scratch.bf16")
    args = parser.parse_args()
    device = loading.pick_device()
    amp = loading.autocast_dtype({"true": True, "false": False}.get(args.bf16, args.bf16), device)
    shape = {"family": "bert", "layers": args.layers, "d_model": args.d_model, "heads": args.heads}
    spec = {"scratch": {**shape, "positions": "2d", "dropout": 0.0}, "max_length": 128}
    vocab, cells = A.vocabulary(A.DEFAULTS), A.DEFAULTS["board_dim"] ** 2
    base = scratch.build(scratch.model_config(spec, vocab, cells), 0)
    scratch.factorise_positions(base, A.DEFAULTS["board_dim"])
    base.to(device)
    tokenizer = scratch.tokenizer(vocab, "bert", scratch.n_positions(spec, cells))
    docs, warm = board_docs(tokenizer, args.boards), board_docs(tokenizer, 4 * args.batch_size)
    cfg = {**CFG, "batch_size": args.batch_size, "mask_fraction": args.mask_fraction}
    print(f"device: {loading.describe_device(device)}; autocast {amp}; {args.boards} boards x {docs.token_ids[0].size} "
          f"tokens, batch {args.batch_size}; scratch BERT {args.layers} x {args.d_model}, 2d positions, "
          f"{sum(p.numel() for p in base.parameters()):,} parameters")  # fmt: skip
    ours(copy.deepcopy(base), tokenizer, warm, cfg, device, amp)  # warm-up of both paths
    plain(copy.deepcopy(base), tokenizer, warm, cfg, device, amp)
    ours_rates, plain_rates = [], []
    for _ in range(args.repeats):
        ours_rates.append(ours(copy.deepcopy(base), tokenizer, docs, cfg, device, amp))
        plain_rates.append(plain(copy.deepcopy(base), tokenizer, docs, cfg, device, amp))
    a, b = statistics.median(ours_rates), statistics.median(plain_rates)
    print(f"ours {a:8.0f} tokens/s  plain transformers loop {b:8.0f} tokens/s  ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
