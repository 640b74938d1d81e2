"""The training loop every stage that trains a transformer shares (`finetune`, `pretrain`): AdamW
with linear warmup and decay over length-bucketed batches of a tokens table, bf16 autocast where it
helps, gradient clipping, progress lines, resumable checkpoints (`workflow.models.resume`), and the
language-model losses (next-token, masked-token).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from workflow.models.resume import Checkpoint, TrainingState
from workflow.store.tokens import Documents, batches

log = logging.getLogger(__name__)


def length_bucketed_order(docs: Documents, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffled order whose batches hold documents of similar length.

    Shuffle, cut into chunks of 50 batches, sort each chunk by length, then
    shuffle the batches: padding drops a lot and batches stay random.
    """
    order = rng.permutation(len(docs.token_ids))
    lengths = np.array([len(t) for t in docs.token_ids])
    chunk = batch_size * 50
    order = np.concatenate(
        [c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(chunk, len(order), chunk))]
    )
    groups = np.split(order, range(batch_size, len(order), batch_size))
    return np.concatenate([groups[i] for i in rng.permutation(len(groups))])


def next_token_loss(model, idx, inputs):
    """Mean cross-entropy of every real token but the first, predicted from the ones before it
    (`workflow.models.lm.next_token_loss`: the LM head fused with the loss)."""
    from workflow.models import lm

    return lm.next_token_loss(model, inputs)


def masked_token_loss(tokenizer, docs: Documents, seed: int, mask_fraction: float = 0.15):
    """loss(model, idx, inputs): BERT's masked-LM objective, `mask_fraction` (BERT's 15%) of the real,
    non-special tokens drawn afresh each step (80% mask token, 10% random, 10% kept; transformers'
    collator)."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_fraction, seed=seed)
    collator.create_rng()  # its generator now, so a checkpoint can save and restore its state

    def loss(model, idx, inputs):
        ids = inputs["input_ids"]
        special = torch.ones_like(ids, dtype=torch.bool)
        for j, i in enumerate(idx):
            special[j, : len(docs.special[i])] = torch.from_numpy(docs.special[i].astype(bool))
        masked, labels = collator.torch_mask_tokens(ids.cpu().clone(), special.cpu())
        out = model(**{**inputs, "input_ids": masked.to(ids.device)}).logits.float()
        labels = labels.to(ids.device)
        if not (labels != -100).any():
            return out.sum() * 0.0
        return torch.nn.functional.cross_entropy(out[labels != -100], labels[labels != -100])

    loss.generator = collator.generator
    return loss


def optimizer_for(trainable, cfg: dict, device):
    """AdamW; the fused kernel (one pass over every parameter, CPU and CUDA) where the parameters allow."""
    import torch

    fused = device.type in ("cpu", "cuda") and all(
        p.is_floating_point() and p.device.type == device.type for p in trainable
    )
    return torch.optim.AdamW(trainable, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=fused or None)


class Progress:
    """A log line every `every` steps: mean loss and tokens/s since the last one."""

    def __init__(self, every: int, total: int):
        self.every, self.total = every, total
        self.loss, self.tokens, self.start = 0.0, 0, time.perf_counter()

    def add(self, epoch: int, step: int, loss: float, tokens: int, lr: float) -> None:
        self.loss, self.tokens = self.loss + loss, self.tokens + tokens
        if step % self.every == 0 or step == self.total:
            now = time.perf_counter()
            mean = self.loss / (step % self.every or self.every)
            tokens_per_s = self.tokens / (now - self.start)
            log.info(
                "epoch %d step %d/%d loss %.4f lr %.2e %.0f tokens/s", epoch, step, self.total, mean, lr, tokens_per_s
            )
            self.loss, self.tokens, self.start = 0.0, 0, now


def train(
    model, docs: Documents, cfg: dict, pad_id: int, device, amp_dtype, loss_of, checkpoint=None, on_step=None
) -> dict:
    """AdamW with linear warmup and decay over the trainable parameters; `loss_of(model, idx, inputs)`
    gives a batch's loss. `checkpoint`: a `resume.Checkpoint` to save to and resume from. `on_step(step,
    total)`: called after every optimizer step (the model in training mode), e.g. to save snapshots."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    checkpoint = checkpoint or Checkpoint(None)
    batch_size = cfg["batch_size"]
    steps_per_epoch = math.ceil(len(docs.token_ids) / batch_size)
    total = steps_per_epoch * cfg["epochs"]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in named]
    optimizer = optimizer_for(trainable, cfg, device)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
    run = TrainingState(named, optimizer, schedule, cfg["seed"], loss_of)
    checkpoint.restore(run, device, total)
    model.train()
    progress, started = Progress(cfg["log_every"], total), time.perf_counter()
    for epoch in range(run.epoch, cfg["epochs"]):
        run.epoch = epoch
        if run.order is None:
            run.order = length_bucketed_order(docs, batch_size, run.rng)
        done = (run.step - run.epoch * steps_per_epoch) * batch_size  # documents trained on (resumed)
        for idx, inputs in batches(docs, batch_size, pad_id, run.order[done:]):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_of(model, idx, inputs)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {run.step}; lower the lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg["max_grad_norm"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            run.step += 1
            n_tok = int(inputs["attention_mask"].sum())
            run.tokens += n_tok
            progress.add(run.epoch + 1, run.step, loss.item(), n_tok, schedule.get_last_lr()[0])
            if on_step is not None:
                on_step(run.step, total)
            if checkpoint.due(run.step, total):
                checkpoint.save(run, run.step % steps_per_epoch == 0, time.perf_counter() - started)
        run.order = None
    seconds = run.seconds + time.perf_counter() - started
    return {
        "steps": run.step,
        "epochs": cfg["epochs"],
        "tokens": run.tokens,
        "seconds": seconds,
        "tokens_per_s": run.tokens / seconds,
    }
