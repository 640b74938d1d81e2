"""Stage `finetune`: sequence classification on one dataset, before/after metrics.

`AutoModelForSequenceClassification` from the model source (any family of
`workflow.models.families`: encoders classify from the first token, decoders
from the last non-padding token) gets a freshly initialised classifier layer; its test accuracy is the reference
study's "pre-trained accuracy" (the layer is random, so about chance). AdamW
with linear warmup and decay then trains the whole model on the train split.
The result is a `save_pretrained` folder (model + tokenizer) and
``metrics.json`` with accuracy and macro-F1 before and after.

Batches come from the tokens table, so the model sees exactly the tokens that
extraction reads later. bf16 autocast is used where it helps: on a CPU with
native bf16 it is about 2x faster (../shared/notes), on CUDA it is standard.
For models that do not fit in float32, `gradient_checkpointing` recomputes each
block's activations in the backward pass, and the model's `load` options
(dtype, device_map) apply here as in every other stage.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from workflow import cli
from workflow.models import loading
from workflow.models.classifier import evaluate, save_classifier
from workflow.models.sources import resolve_source
from workflow.store.files import read_json
from workflow.store.tokens import Documents, batches, read_documents

log = logging.getLogger(__name__)


def _length_bucketed_order(docs: Documents, batch_size: int, rng: np.random.Generator) -> np.ndarray:
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


def train(model, docs: Documents, cfg: dict, pad_id: int, device, amp_dtype) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    rng = np.random.default_rng(cfg["seed"])
    steps_per_epoch = math.ceil(len(docs.token_ids) / cfg["batch_size"])
    total = steps_per_epoch * cfg["epochs"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
    model.train()
    step, tokens, started = 0, 0, time.perf_counter()
    window_loss, window_tokens, window_start = 0.0, 0, started
    for epoch in range(cfg["epochs"]):
        for idx, inputs in batches(
            docs, cfg["batch_size"], pad_id, _length_bucketed_order(docs, cfg["batch_size"], rng)
        ):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            labels = torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(**inputs).logits
            loss = F.cross_entropy(logits.float(), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower finetune.lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["max_grad_norm"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            n_tok = int(inputs["attention_mask"].sum())
            tokens += n_tok
            window_loss, window_tokens = window_loss + loss.item(), window_tokens + n_tok
            if step % cfg["log_every"] == 0 or step == total:
                now = time.perf_counter()
                log.info(
                    "epoch %d step %d/%d loss %.4f lr %.2e %.0f tokens/s",
                    epoch + 1,
                    step,
                    total,
                    window_loss / (step % cfg["log_every"] or cfg["log_every"]),
                    schedule.get_last_lr()[0],
                    window_tokens / (now - window_start),
                )
                window_loss, window_tokens, window_start = 0.0, 0, now
    seconds = time.perf_counter() - started
    return {
        "steps": step,
        "epochs": cfg["epochs"],
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }


def run(model_source: str, train_tokens: str, test_tokens: str, dataset_meta: str, cfg: dict, out_dir: str) -> dict:
    import torch

    torch.manual_seed(cfg["seed"])  # the fresh classifier layer's initialisation
    device = loading.pick_device()
    amp_dtype = loading.autocast_dtype(cfg["bf16"], device)
    log.info("device: %s; autocast: %s", loading.describe_device(device), amp_dtype)
    source = resolve_source(model_source)
    label_names = read_json(dataset_meta)["label_names"]
    tokenizer = loading.load_tokenizer(source)
    model = loading.load_classifier(source, len(label_names), tokenizer.pad_token_id, device)
    if cfg.get("gradient_checkpointing"):  # recompute each block's activations in the backward pass
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    train_docs = read_documents(train_tokens).sample(max_docs=cfg["max_train_docs"], seed=cfg["seed"])
    test_docs = read_documents(test_tokens)
    log.info(
        "train: %d docs, %d tokens; test: %d docs; %d labels",
        len(train_docs.token_ids),
        train_docs.n_tokens,
        len(test_docs.token_ids),
        len(label_names),
    )
    pad_id = tokenizer.pad_token_id
    before = evaluate(model, test_docs, cfg["eval_batch_size"], pad_id, device, amp_dtype)
    log.info("pretrained (fresh classifier): accuracy %.4f macro-F1 %.4f", before["accuracy"], before["macro_f1"])
    training = train(model, train_docs, cfg, pad_id, device, amp_dtype)
    after = evaluate(model, test_docs, cfg["eval_batch_size"], pad_id, device, amp_dtype)
    log.info(
        "fine-tuned: accuracy %.4f macro-F1 %.4f (%.0f tokens/s training)",
        after["accuracy"],
        after["macro_f1"],
        training["tokens_per_s"],
    )
    metrics = {
        "pretrained": before,
        "finetuned": after,
        "train": training,
        "label_names": label_names,
        "device": loading.describe_device(device),
        "autocast": str(amp_dtype),
        "config": cfg,
    }
    save_classifier(model, tokenizer, label_names, metrics, out_dir)
    return metrics


def main(argv=None) -> None:
    parser = cli.classifier_job(
        cli.parser(__name__, __doc__), "model source (folder, hub id or package:NAME)", "finetune config"
    )
    args = cli.parse_model_job(parser, argv)
    run(args.model, args.train_tokens, args.test_tokens, args.meta, args.config, args.out_dir)
