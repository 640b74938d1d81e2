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
from pathlib import Path

import numpy as np

from workflow import layout
from workflow.datasets.baseline import shortfall
from workflow.models import finetuning, loading, resume
from workflow.models.classifier import save_classifier
from workflow.models.resume import Checkpoint
from workflow.models.sources import resolve_source
from workflow.runner import cli
from workflow.runner.codehash import code_version
from workflow.store.files import read_json
from workflow.store.tokens import Documents, read_documents

log = logging.getLogger(__name__)

CHECKPOINT = layout.FINETUNED.names["checkpoint"]


def run_lm(
    source: str, train_docs: Documents, test_docs: Documents, cfg: dict, out_dir: str, device, amp_dtype, checkpoint
):
    """Next-token (causal_lm) or masked-token (masked_lm) fine-tuning, full or LoRA; the merged model
    is saved with save_pretrained, a LoRA adapter beside it (``adapter/``)."""
    kind = "causal" if cfg["kind"] == "causal_lm" else "masked"
    tokenizer = loading.load_tokenizer(source)
    model = loading.lm_class(kind).from_pretrained(source, **loading.load_kwargs())
    model.config.use_cache = False
    if not loading.OPTIONS["device_map"]:
        model = model.to(device)
    model, metrics = finetuning.finetune_lm(
        model, tokenizer, source, train_docs, test_docs, cfg, device, amp_dtype, checkpoint
    )
    finetuning.save_lm(model, tokenizer, metrics, out_dir)
    return metrics


def training_documents(train_tokens: str, data: str | None, cfg: dict) -> Documents:
    """The train documents the fine-tune trains on: those the dataset's ``finetune`` column marks, where
    it has one (boards of a declared change: the original boards are there for the analyses only), then
    a seeded sample of ``max_train_docs``."""
    docs = read_documents(train_tokens)
    if data is not None:
        import polars as pl

        table = pl.read_parquet(data)
        if "finetune" in table.columns:
            ids = table.filter(pl.col("finetune"))["id"].to_numpy()
            docs = docs.subset(np.flatnonzero(np.isin(docs.doc_ids, ids)))
            log.info("fine-tuning on the %d of %d train documents the dataset marks (finetune)", len(ids), len(table))
    return docs.sample(max_docs=cfg["max_train_docs"], seed=cfg["seed"])


def resumable(train_tokens: str, data: str | None, model_source: str, source: str, cfg: dict, out_dir: str):
    """The job's resumable checkpoint, keyed by everything a resumed run must share with the killed one."""
    key = resume.fingerprint(
        train_tokens, data, model_source, resume.folder_listing(source), cfg, loading.OPTIONS, code_version("finetune")
    )
    return Checkpoint(Path(out_dir) / CHECKPOINT, key, cfg.get("checkpoint_every", 500))


def run(
    model_source: str,
    train_tokens: str,
    test_tokens: str,
    dataset_meta: str,
    cfg: dict,
    out_dir: str,
    data: str | None = None,
) -> dict:
    import torch

    torch.manual_seed(cfg["seed"])  # the fresh classifier layer's initialisation
    device = loading.pick_device()
    amp_dtype = loading.autocast_dtype(cfg["bf16"], device)
    log.info("device: %s; autocast: %s", loading.describe_device(device), amp_dtype)
    source = resolve_source(model_source)
    checkpoint = resumable(train_tokens, data, model_source, source, cfg, out_dir)
    if cfg.get("kind", "classify") != "classify":
        train_docs = training_documents(train_tokens, data, cfg)
        return run_lm(source, train_docs, read_documents(test_tokens), cfg, out_dir, device, amp_dtype, checkpoint)
    meta = read_json(dataset_meta)
    label_names = meta["label_names"]
    tokenizer = loading.load_tokenizer(source)
    model = loading.load_classifier(source, len(label_names), tokenizer.pad_token_id, device)
    if cfg.get("gradient_checkpointing"):
        finetuning.gradient_checkpointing(model)
    train_docs = training_documents(train_tokens, data, cfg)
    test_docs = read_documents(test_tokens)
    message = "train: %d docs, %d tokens; test: %d docs; %d labels"
    log.info(message, len(train_docs.token_ids), train_docs.n_tokens, len(test_docs.token_ids), len(label_names))
    pad_id = tokenizer.pad_token_id
    scores = finetuning.finetune_classifier(model, train_docs, test_docs, cfg, pad_id, device, amp_dtype, checkpoint)
    if warning := shortfall(scores["finetuned"]["accuracy"], meta):
        log.warning("%s", warning)
    metrics = {
        **scores,
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
    parser.add_argument("--data", help="the dataset's train split (its finetune column, where it has one)")
    args = cli.parse_model_job(parser, argv)
    run(args.model, args.train_tokens, args.test_tokens, args.meta, args.config, args.out_dir, args.data)
