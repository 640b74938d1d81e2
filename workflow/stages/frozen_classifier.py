"""Stage `frozen_classifier`: the pretrained model with a classifier fitted on its frozen body.

The final linear layer of `AutoModelForSequenceClassification` (encoders: on the
pooled [CLS]; decoders: on the last real token) is fitted by cross-validated
logistic regression (scikit-learn) on the frozen pretrained model's inputs to
that layer over the train split; nothing else changes. This is the usual
"linear probe before fine-tuning" baseline, and it gives the pretrained variant
a task loss, so that an SAE of the pretrained model can be spliced in, and its
attention heads ablated, and scored the way the fine-tuned model's are. Output:
a save_pretrained folder plus metrics.json (test accuracy, macro-F1, loss).
"""

from __future__ import annotations

import logging

import numpy as np

from workflow.models import loading
from workflow.models.classifier import classifier_layer, evaluate, save_classifier
from workflow.models.hooks import Hooks
from workflow.models.sources import resolve_source
from workflow.runner import cli
from workflow.store.files import read_json
from workflow.store.tokens import batches, length_order, read_documents

log = logging.getLogger(__name__)


def classifier_inputs(model, docs, batch_size: int, pad_id: int, device) -> np.ndarray:
    """(n_docs, hidden) inputs of the final linear layer, one per document (in table order)."""
    import torch

    layer, seen = classifier_layer(model), {}

    def grab(module, args):
        seen["x"] = args[0].detach()

    out = np.zeros((len(docs.token_ids), layer.in_features), dtype=np.float32)
    with Hooks([(layer, "pre", grab)]), torch.inference_mode():
        for idx, inputs in batches(docs, batch_size, pad_id, length_order(docs)):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            model(**inputs)
            x = seen["x"]
            if x.dim() == 3:  # decoders score every position and keep the last real token
                last = inputs["attention_mask"].sum(1) - 1
                x = x[torch.arange(len(x), device=x.device), last]
            out[idx] = x.float().cpu().numpy()
    return out


def fit(features: np.ndarray, labels: np.ndarray, has_bias: bool, n_labels: int, seed: int):
    """(weight, bias, the fitted scikit-learn model) of a logistic regression on the features, in the layer's
    own units.

    Features are standardised for a fast, well-conditioned fit, and the scaling is folded back
    into the weights (without a bias, as GPT-2's score layer, they are only scaled, not centred).
    """
    from sklearn.linear_model import LogisticRegressionCV

    mu = features.mean(0) if has_bias else np.zeros(features.shape[1], dtype=features.dtype)
    sigma = features.std(0) + 1e-6
    probe = LogisticRegressionCV(
        Cs=np.logspace(-3, 1, 5),
        cv=3,
        l1_ratios=(0.0,),
        scoring="accuracy",
        max_iter=500,
        tol=1e-3,
        fit_intercept=has_bias,
        random_state=seed,
        use_legacy_attributes=False,
    )
    probe.fit((features - mu) / sigma, labels)
    coef = probe.coef_ / sigma
    intercept = probe.intercept_ - coef @ mu if has_bias else np.zeros(len(coef))
    if n_labels == 2 and coef.shape[0] == 1:  # binary: softmax over (-z/2, z/2) equals sigmoid(z)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    return coef, np.asarray(intercept), probe


def run(model_source: str, train_tokens: str, test_tokens: str, dataset_meta: str, cfg: dict, out_dir: str) -> dict:
    import torch

    device = loading.pick_device()
    source = resolve_source(model_source)
    label_names = read_json(dataset_meta)["label_names"]
    tokenizer = loading.load_tokenizer(source)  # saved with the model, so the folder loads as a classifier
    pad_id = tokenizer.pad_token_id
    torch.manual_seed(cfg["seed"])
    model = loading.load_classifier(source, len(label_names), pad_id, device).eval()
    train_docs = read_documents(train_tokens).sample(max_docs=cfg["max_train_docs"], seed=cfg["seed"])
    log.info(
        "device: %s; the classifier's inputs of %d train documents",
        loading.describe_device(device),
        len(train_docs.labels),
    )
    features = classifier_inputs(model, train_docs, cfg["eval_batch_size"], pad_id, device)
    layer = classifier_layer(model)
    coef, intercept, probe = fit(features, train_docs.labels, layer.bias is not None, len(label_names), cfg["seed"])
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(coef).to(layer.weight))
        if layer.bias is not None:
            layer.bias.copy_(torch.from_numpy(intercept).to(layer.bias))
    metrics = evaluate(model, read_documents(test_tokens), cfg["eval_batch_size"], pad_id, device, None)
    metrics.update(C=float(np.atleast_1d(probe.C_)[0]), n_train_docs=len(train_docs.labels))
    log.info(
        "pretrained body + fitted classifier (C=%.3g): test accuracy %.4f macro-F1 %.4f loss %.4f",
        metrics["C"],
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["loss"],
    )
    save_classifier(model, tokenizer, label_names, metrics, out_dir)
    return metrics


def main(argv=None) -> None:
    parser = cli.classifier_job(
        cli.parser(__name__, __doc__), "pretrained model source", "model's finetune config (seed, sizes)"
    )
    args = cli.parse_model_job(parser, argv)
    run(args.model, args.train_tokens, args.test_tokens, args.meta, args.config, args.out_dir)
