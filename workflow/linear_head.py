"""Stage `linear_head`: the pretrained model with a task head fitted on its frozen body.

The classifier head of `AutoModelForSequenceClassification` (BERT: on the
pooled [CLS]; GPT-2: on the last real token) is fitted by cross-validated
logistic regression (scikit-learn) on the frozen pretrained model's head
inputs over the train split; nothing else changes. This is the usual "linear
probe before fine-tuning" baseline, and it gives the pretrained variant a
task loss, so that an SAE of the pretrained model can be spliced in and
scored the way the fine-tuned model's SAEs are. Output: a save_pretrained
folder plus metrics.json (test accuracy, macro-F1, loss).
"""

from __future__ import annotations

import argparse
import json
import logging

import numpy as np

from workflow import io, models
from workflow.finetune import evaluate, save_classifier
from workflow.tokenize import batches, read_documents

log = logging.getLogger(__name__)


def head_of(model):
    """The final linear layer of a sequence classifier."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if head is not None:
            return head.out_proj if hasattr(head, "out_proj") else head  # RoBERTa's head ends in out_proj
    raise ValueError(f"{type(model).__name__}: no classifier or score head")


def head_inputs(model, docs, batch_size: int, pad_id: int, device) -> np.ndarray:
    """(n_docs, hidden) inputs of the head, one per document (in table order)."""
    import torch

    head, seen = head_of(model), {}

    def grab(module, args):
        seen["x"] = args[0].detach()

    handle = head.register_forward_pre_hook(grab)
    out = np.zeros((len(docs.token_ids), head.in_features), dtype=np.float32)
    try:
        with torch.inference_mode():
            order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
            for idx, inputs in batches(docs, batch_size, pad_id, order):
                inputs = {k: v.to(device) for k, v in inputs.items()}
                model(**inputs)
                x = seen["x"]
                if x.dim() == 3:  # GPT-2 scores every position and keeps the last real token
                    last = inputs["attention_mask"].sum(1) - 1
                    x = x[torch.arange(len(x), device=x.device), last]
                out[idx] = x.float().cpu().numpy()
    finally:
        handle.remove()
    return out


def run(model_source: str, train_tokens: str, test_tokens: str, dataset_meta: str, cfg: dict, out_dir: str) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegressionCV

    device = models.pick_device()
    source = models.resolve_source(model_source)
    label_names = io.read_json(dataset_meta)["label_names"]
    tokenizer = models.load_tokenizer(source)  # saved with the head, so the folder loads as a classifier
    pad_id = tokenizer.pad_token_id
    torch.manual_seed(cfg["seed"])
    model = models.load_classifier(source, len(label_names), pad_id, device).eval()
    train_docs = read_documents(train_tokens).sample(max_docs=cfg["max_train_docs"], seed=cfg["seed"])
    features = head_inputs(model, train_docs, cfg["eval_batch_size"], pad_id, device)
    head = head_of(model)
    has_bias = head.bias is not None
    # standardise for a fast, well-conditioned fit; fold the scaling back into the head's weights
    # (without a bias, as GPT-2's score layer, features are only scaled, not centred)
    mu = features.mean(0) if has_bias else np.zeros(features.shape[1], dtype=features.dtype)
    sigma = features.std(0) + 1e-6
    probe = LogisticRegressionCV(Cs=np.logspace(-3, 1, 5), cv=3, l1_ratios=(0.0,), scoring="accuracy", max_iter=500,
                                 tol=1e-3, fit_intercept=has_bias, random_state=cfg["seed"], use_legacy_attributes=False)
    probe.fit((features - mu) / sigma, train_docs.labels)
    coef = probe.coef_ / sigma
    intercept = probe.intercept_ - coef @ mu if has_bias else np.zeros(len(coef))
    if len(label_names) == 2 and coef.shape[0] == 1:  # binary: softmax over (-z/2, z/2) equals sigmoid(z)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(coef).to(head.weight))
        if has_bias:
            head.bias.copy_(torch.from_numpy(np.asarray(intercept)).to(head.bias))
    metrics = evaluate(model, read_documents(test_tokens), cfg["eval_batch_size"], pad_id, device, None)
    metrics.update(C=float(np.atleast_1d(probe.C_)[0]), n_train_docs=len(train_docs.labels))
    log.info("pretrained body + fitted head (C=%.3g): test accuracy %.4f macro-F1 %.4f loss %.4f",
             metrics["C"], metrics["accuracy"], metrics["macro_f1"], metrics["loss"])
    save_classifier(model, tokenizer, label_names, metrics, out_dir)
    return metrics


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow linear_head", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="pretrained model source")
    parser.add_argument("--train-tokens", required=True)
    parser.add_argument("--test-tokens", required=True)
    parser.add_argument("--meta", required=True, help="the dataset's meta.json (label names)")
    parser.add_argument("--config", required=True, help="the model's finetune config as JSON (seed, sizes)")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.model, args.train_tokens, args.test_tokens, args.meta, json.loads(args.config), args.out_dir)
