"""Stage `frozen_classifier`: the pretrained model with a classifier fitted on its frozen body.

The final linear layer of `AutoModelForSequenceClassification` (encoders: on the
pooled [CLS]; decoders: on the last real token) is fitted by cross-validated
logistic regression (scikit-learn) on the frozen pretrained model's inputs to
that layer over the train split; nothing else changes. This is the usual
"linear probe before fine-tuning" baseline, and it gives the pretrained variant
a task loss, so that an SAE of the pretrained model can be spliced in, and its
attention heads ablated, and scored the way the fine-tuned model's are. Output:
a save_pretrained folder plus metrics.json (test accuracy, macro-F1, loss). The fit and its
folding into the layer's units: `workflow.analysis.linear_head`.
"""

from __future__ import annotations

import logging

import numpy as np

from workflow.analysis import linear_head
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
    coef, intercept, probe = linear_head.fit(
        features, train_docs.labels, layer.bias is not None, len(label_names), cfg["seed"]
    )
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
