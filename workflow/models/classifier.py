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
    """Accuracy, macro-F1 and mean cross-entropy on `docs`, per document: where documents are
    windowed (tokenize.stride), a document's prediction is the mean of its windows' logits."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import f1_score

    model.eval()
    logits = [None] * len(docs.token_ids)
    # sort by length so batches carry little padding; metrics do not depend on order
    order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for idx, inputs in batches(docs, batch_size, pad_id, order):
            out = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu()
            for j, i in enumerate(idx):
                logits[i] = out[j]
    logits, labels = torch.stack(logits), torch.from_numpy(docs.labels.astype(np.int64))
    n_windows = len(labels)
    if docs.doc_ids is not None and len(np.unique(docs.doc_ids)) < n_windows:
        _, first, inverse = np.unique(docs.doc_ids, return_index=True, return_inverse=True)
        inverse = torch.from_numpy(inverse.astype(np.int64))
        summed = torch.zeros(len(first), logits.shape[1]).index_add_(0, inverse, logits)
        logits = summed / torch.bincount(inverse, minlength=len(first)).unsqueeze(1)
        labels = labels[torch.from_numpy(first.astype(np.int64))]
    predicted = logits.argmax(-1).numpy()
    return {
        "accuracy": float((predicted == labels.numpy()).mean()),
        "macro_f1": float(f1_score(labels.numpy(), predicted, average="macro")),
        "loss": float(F.cross_entropy(logits, labels).item()),
        "n_docs": int(len(labels)),
        **({"n_windows": n_windows} if n_windows > len(labels) else {}),
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
