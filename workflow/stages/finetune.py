"""Stage `finetune`: the fine-tuned variant of one model on one dataset, with before/after metrics.

The kind (`models.<name>.finetuned.kind`) says how. ``classify`` (the default):
sequence classification, below. ``causal_lm``: next-token fine-tuning on the
train split's text; ``masked_lm``: BERT's masked-token objective (domain-adaptive
pre-training). Both train every weight (``method: full``) or LoRA adapters through
peft (``method: lora``), which are then merged into the weights: the merged
``save_pretrained`` folder is what every later stage loads, the adapter is kept in
``adapter/``. ``metrics.json`` holds the test next-token (masked-token) loss and
perplexity before and after. The rest of this note is about ``classify``.

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

Every `checkpoint_every` steps the training state (trainable weights, optimizer,
schedule, the epoch's order and position, and every random generator) is saved
as ``checkpoint.pt`` in the output folder; a re-run of a killed job resumes from
it, says so in its log, and ends with the same weights as an uninterrupted run.
The checkpoint goes when the finished folder replaces it.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from workflow import cli, layout
from workflow.codehash import code_version
from workflow.datasets.baseline import shortfall
from workflow.models import loading, resume
from workflow.models.classifier import evaluate, save_classifier
from workflow.models.resume import Checkpoint, TrainingState
from workflow.models.sources import resolve_source
from workflow.store import checksums
from workflow.store.files import read_json
from workflow.store.tokens import Documents, batches, read_documents

log = logging.getLogger(__name__)

CHECKPOINT = layout.FINETUNED.names["checkpoint"]


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


def classification_loss(docs: Documents, device):
    """loss(model, idx, inputs): cross-entropy of the documents' labels."""
    import torch
    import torch.nn.functional as F

    def loss(model, idx, inputs):
        labels = torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)
        return F.cross_entropy(model(**inputs).logits.float(), labels)

    return loss


def next_token_loss(model, idx, inputs):
    """Mean cross-entropy of every real token but the first, predicted from the ones before it
    (`workflow.models.lm.next_token_loss`: the LM head fused with the loss)."""
    from workflow.models import lm

    return lm.next_token_loss(model, inputs)


def masked_token_loss(tokenizer, docs: Documents, seed: int):
    """loss(model, idx, inputs): BERT's masked-LM objective, 15% of the real, non-special tokens
    drawn afresh each step (80% mask token, 10% random, 10% kept; transformers' collator)."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=seed)
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


def _optimizer(trainable, cfg: dict, device):
    """AdamW; the fused kernel (one pass over every parameter, CPU and CUDA) where the parameters allow."""
    import torch

    fused = device.type in ("cpu", "cuda") and all(
        p.is_floating_point() and p.device.type == device.type for p in trainable
    )
    return torch.optim.AdamW(trainable, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=fused or None)


class _Progress:
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


def train(model, docs: Documents, cfg: dict, pad_id: int, device, amp_dtype, loss_of, checkpoint=None) -> dict:
    """AdamW with linear warmup and decay over the trainable parameters; `loss_of(model, idx, inputs)`
    gives a batch's loss. `checkpoint`: a `resume.Checkpoint` to save to and resume from."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    checkpoint = checkpoint or Checkpoint(None)
    batch_size = cfg["batch_size"]
    steps_per_epoch = math.ceil(len(docs.token_ids) / batch_size)
    total = steps_per_epoch * cfg["epochs"]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable = [p for _, p in named]
    optimizer = _optimizer(trainable, cfg, device)
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_fraction"] * total), total)
    run = TrainingState(named, optimizer, schedule, cfg["seed"], loss_of)
    checkpoint.restore(run, device, total)
    model.train()
    progress, started = _Progress(cfg["log_every"], total), time.perf_counter()
    for epoch in range(run.epoch, cfg["epochs"]):
        run.epoch = epoch
        if run.order is None:
            run.order = _length_bucketed_order(docs, batch_size, run.rng)
        done = (run.step - run.epoch * steps_per_epoch) * batch_size  # documents trained on (resumed)
        for idx, inputs in batches(docs, batch_size, pad_id, run.order[done:]):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_of(model, idx, inputs)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {run.step}; lower finetune.lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg["max_grad_norm"])
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            run.step += 1
            n_tok = int(inputs["attention_mask"].sum())
            run.tokens += n_tok
            progress.add(run.epoch + 1, run.step, loss.item(), n_tok, schedule.get_last_lr()[0])
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


def with_lora(model, family_name: str, lora: dict, kind: str):
    """`model` wrapped by peft with LoRA adapters on `lora["target_modules"]` (the base frozen)."""
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=lora["r"],
        lora_alpha=lora["alpha"],
        lora_dropout=lora["dropout"],
        target_modules=list(lora["target_modules"]),
        fan_in_fan_out=family_name == "gpt2",  # GPT-2's Conv1D stores weights transposed
        task_type=TaskType.CAUSAL_LM if kind == "causal" else None,
    )
    return get_peft_model(model, config)


def trainable_counts(model) -> dict:
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_parameters": int(n_train), "parameters": int(n_all)}


def run_lm(
    source: str, train_docs: Documents, test_docs: Documents, cfg: dict, out_dir: str, device, amp_dtype, checkpoint
):
    """Next-token (causal_lm) or masked-token (masked_lm) fine-tuning, full or LoRA; the merged model
    is saved with save_pretrained, a LoRA adapter beside it (``adapter/``)."""
    from workflow.models.families import FAMILIES, model_family
    from workflow.models.lm import mean_loss
    from workflow.models.sources import read_model_config
    from workflow.store.files import atomic_dir, write_json

    kind = "causal" if cfg["kind"] == "causal_lm" else "masked"
    tokenizer = loading.load_tokenizer(source)
    pad_id, mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
    model = loading.lm_class(kind).from_pretrained(source, **loading.load_kwargs())
    model.config.use_cache = False
    if not loading.OPTIONS["device_map"]:
        model = model.to(device)
    before = mean_loss(model, test_docs, kind, cfg["eval_batch_size"], pad_id, mask_id, device, amp_dtype)
    log.info("pretrained: test %s-token loss %.4f (perplexity %.2f)", kind, before["loss"], before["perplexity"])
    if cfg["method"] == "lora":
        model = with_lora(model, FAMILIES[model_family(read_model_config(source))].name, cfg["lora"], kind)
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg["method"] == "lora":
            model.enable_input_require_grads()
    counts = trainable_counts(model)
    log.info(
        "%s fine-tuning of %d of %d parameters", cfg["method"], counts["trainable_parameters"], counts["parameters"]
    )
    loss_of = next_token_loss if kind == "causal" else masked_token_loss(tokenizer, train_docs, cfg["seed"])
    training = {**train(model, train_docs, cfg, pad_id, device, amp_dtype, loss_of, checkpoint), **counts}
    after = mean_loss(model, test_docs, kind, cfg["eval_batch_size"], pad_id, mask_id, device, amp_dtype)
    log.info(
        "fine-tuned: test loss %.4f (perplexity %.2f; %.0f tokens/s training)",
        after["loss"],
        after["perplexity"],
        training["tokens_per_s"],
    )
    metrics = {
        "kind": cfg["kind"],
        "method": cfg["method"],
        "pretrained": before,
        "finetuned": after,
        "train": training,
        "device": loading.describe_device(device),
        "autocast": str(amp_dtype),
        "config": cfg,
    }
    with atomic_dir(out_dir) as tmp:
        if cfg["method"] == "lora":
            model.save_pretrained(tmp / layout.FINETUNED.names["adapter"])  # the adapter alone (peft)
            model = model.merge_and_unload()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(metrics, tmp / layout.CLASSIFIER_FILES["metrics"])
        checksums.record(tmp, None, target=Path(out_dir) / layout.CLASSIFIER_FILES["metrics"])
    return metrics


def run(model_source: str, train_tokens: str, test_tokens: str, dataset_meta: str, cfg: dict, out_dir: str) -> dict:
    import torch

    torch.manual_seed(cfg["seed"])  # the fresh classifier layer's initialisation
    device = loading.pick_device()
    amp_dtype = loading.autocast_dtype(cfg["bf16"], device)
    log.info("device: %s; autocast: %s", loading.describe_device(device), amp_dtype)
    source = resolve_source(model_source)
    key = resume.fingerprint(
        train_tokens, model_source, resume.folder_listing(source), cfg, loading.OPTIONS, code_version("finetune")
    )
    checkpoint = Checkpoint(Path(out_dir) / CHECKPOINT, key, cfg.get("checkpoint_every", 500))
    if cfg.get("kind", "classify") != "classify":
        train_docs = read_documents(train_tokens).sample(max_docs=cfg["max_train_docs"], seed=cfg["seed"])
        return run_lm(source, train_docs, read_documents(test_tokens), cfg, out_dir, device, amp_dtype, checkpoint)
    meta = read_json(dataset_meta)
    label_names = meta["label_names"]
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
    loss_of = classification_loss(train_docs, device)
    training = train(model, train_docs, cfg, pad_id, device, amp_dtype, loss_of, checkpoint)
    after = evaluate(model, test_docs, cfg["eval_batch_size"], pad_id, device, amp_dtype)
    log.info(
        "fine-tuned: accuracy %.4f macro-F1 %.4f (%.0f tokens/s training)",
        after["accuracy"],
        after["macro_f1"],
        training["tokens_per_s"],
    )
    if warning := shortfall(after["accuracy"], meta):
        log.warning("%s", warning)
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
