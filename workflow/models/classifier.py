"""What fine-tuning and the frozen-body classifier share: scoring a sequence classifier,
finding its final linear layer, and saving it as a `save_pretrained` folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.layout import CLASSIFIER_FILES
from workflow.store import checksums
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import Documents, batches


def classifier_layer(model):
    """The final linear layer of a sequence classifier (its input is the pooled representation)."""
    for name in ("classifier", "score"):
        layer = getattr(model, name, None)
        if layer is not None:
            return layer.out_proj if hasattr(layer, "out_proj") else layer  # RoBERTa's classifier ends in out_proj
    raise ValueError(f"{type(model).__name__}: no classifier or score layer")


def evaluate(model, docs: Documents, batch_size: int, pad_id: int, device, amp_dtype) -> dict:
    """Accuracy, macro-F1 and mean cross-entropy on `docs`."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import f1_score

    model.eval()
    preds, losses = [], []
    # sort by length so batches carry little padding; metrics do not depend on order
    order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for idx, inputs in batches(docs, batch_size, pad_id, order):
            logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float()
            labels = torch.from_numpy(docs.labels[idx].astype(np.int64)).to(device)
            losses.append(F.cross_entropy(logits, labels, reduction="sum").item())
            preds.append((idx, logits.argmax(-1).cpu().numpy()))
    predicted = np.empty(len(docs.labels), dtype=np.int64)
    for idx, p in preds:
        predicted[idx] = p
    return {
        "accuracy": float((predicted == docs.labels).mean()),
        "macro_f1": float(f1_score(docs.labels, predicted, average="macro")),
        "loss": float(sum(losses) / len(docs.labels)),
        "n_docs": int(len(docs.labels)),
    }


def save_classifier(model, tokenizer, label_names: list, metrics: dict, out_dir: str) -> None:
    """A save_pretrained folder with label names, the tokenizer and metrics.json, renamed into place when complete."""
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {n: i for i, n in enumerate(label_names)}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(metrics, tmp / CLASSIFIER_FILES["metrics"])
        checksums.record(tmp, None, target=Path(out_dir) / CLASSIFIER_FILES["metrics"])
