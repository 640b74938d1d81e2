"""Fine-tuning a pretrained model (stage `finetune`): the sequence classifier's loss and before/after
scores, LoRA adapters through peft, and the language-model fine-tune (next-token or masked-token, every
weight or LoRA adapters merged into them) with its before/after test loss.

The loop itself, with its resumable checkpoints, is `workflow.models.training.train`, shared with
stage `pretrain`; these functions only choose what it trains and with which loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from workflow import layout
from workflow.models import loading
from workflow.models.classifier import evaluate
from workflow.models.training import masked_token_loss, next_token_loss, train
from workflow.store import checksums
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import Documents

log = logging.getLogger(__name__)


def classification_loss(docs: Documents, device):
    """loss(model, idx, inputs): cross-entropy of the documents' labels."""
    import torch
    import torch.nn.functional as F

    def loss(model, idx, inputs):
        labels = torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)
        return F.cross_entropy(model(**inputs).logits.float(), labels)

    return loss


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


def gradient_checkpointing(model, lora: bool = False) -> None:
    """Recompute each block's activations in the backward pass (for models that do not fit otherwise).
    Under LoRA the frozen embeddings' output is made to require grad, or the checkpointed blocks
    would get no gradient to recompute for."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model.enable_input_require_grads()


def trainable_counts(model) -> dict:
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_parameters": int(n_train), "parameters": int(n_all)}


def finetune_classifier(
    model, train_docs: Documents, test_docs: Documents, cfg: dict, pad_id: int, device, amp_dtype, checkpoint
) -> dict:
    """Train every weight of a sequence classifier on the labels of `train_docs`: test scores before
    (the fresh classifier layer: about chance) and after, and the training's numbers."""
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
    return {"pretrained": before, "finetuned": after, "train": training}


def finetune_lm(
    model, tokenizer, source: str, train_docs: Documents, test_docs: Documents, cfg: dict, device, amp_dtype, checkpoint
):
    """Next-token (``causal_lm``) or masked-token (``masked_lm``) fine-tuning of `model` (loaded from
    `source`), every weight or LoRA adapters (`cfg["method"]`): the model trained (a peft model under
    LoRA) and metrics.json (test loss and perplexity before and after, the training's numbers)."""
    from workflow.models.families import FAMILIES, model_family
    from workflow.models.lm import mean_loss
    from workflow.models.sources import read_model_config

    kind = "causal" if cfg["kind"] == "causal_lm" else "masked"
    pad_id, mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
    before = mean_loss(model, test_docs, kind, cfg["eval_batch_size"], pad_id, mask_id, device, amp_dtype)
    log.info("pretrained: test %s-token loss %.4f (perplexity %.2f)", kind, before["loss"], before["perplexity"])
    if cfg["method"] == "lora":
        model = with_lora(model, FAMILIES[model_family(read_model_config(source))].name, cfg["lora"], kind)
    if cfg.get("gradient_checkpointing"):
        gradient_checkpointing(model, lora=cfg["method"] == "lora")
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
    return model, metrics


def save_lm(model, tokenizer, metrics: dict, out_dir: str) -> None:
    """The fine-tuned LM as a save_pretrained folder with its tokenizer and metrics.json, renamed into
    place when complete. A peft (LoRA) model's adapter alone goes to ``adapter/``, and the folder holds
    the adapters merged into the weights: what every later stage loads."""
    with atomic_dir(out_dir) as tmp:
        if metrics["method"] == "lora":
            model.save_pretrained(tmp / layout.FINETUNED.names["adapter"])  # the adapter alone (peft)
            model = model.merge_and_unload()
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(metrics, tmp / layout.CLASSIFIER_FILES["metrics"])
        checksums.record(tmp, None, target=Path(out_dir) / layout.CLASSIFIER_FILES["metrics"])
