"""Stage `frozen_classifier`: a logistic regression on the frozen body's features, folded into the model's
own final layer, so the folder loads as a classifier that predicts what the regression predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tokens_table
from workflow.models import loading
from workflow.models.classifier import classifier_layer
from workflow.stages import frozen_classifier
from workflow.store.files import read_json
from workflow.store.tokens import read_documents

CFG = {"seed": 0, "max_train_docs": None, "eval_batch_size": 16}


@pytest.mark.parametrize("has_bias,n_labels", [(True, 2), (False, 2), (True, 3)])
def test_the_folded_layer_gives_the_regressions_probabilities(has_bias, n_labels):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 6)) * [1, 2, 3, 0.5, 5, 1] + [0, 3, -2, 1, 0, 4]).astype(np.float32)
    scores = x @ rng.standard_normal((6, n_labels))  # labels a linear function decides
    y = scores.argmax(1)
    weight, bias, probe = frozen_classifier.fit(x, y, has_bias, n_labels, seed=0)
    assert weight.shape == (n_labels, 6)
    logits = x @ weight.T + (bias if has_bias else 0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    mu = x.mean(0) if has_bias else 0
    sigma = x.std(0) + 1e-6
    np.testing.assert_allclose(probs, probe.predict_proba((x - mu) / sigma), rtol=1e-4, atol=1e-6)
    assert (probs.argmax(1) == y).mean() > 0.9


def test_only_the_final_layer_changes_and_the_folder_loads_as_a_classifier(data_dir, tiny_bert, tmp_path):
    train, test = (tokens_table(data_dir, tiny_bert, tmp_path, split) for split in ("train", "test"))
    metrics = frozen_classifier.run(
        str(tiny_bert), str(train), str(test), str(data_dir / "meta.json"), CFG, str(tmp_path / "frozen")
    )
    fitted = loading.load_classifier(str(tmp_path / "frozen"), 2)
    body = loading.load_base_model(str(tiny_bert))
    for name, value in body.state_dict().items():  # the body is the pretrained one, untouched
        torch.testing.assert_close(fitted.base_model.state_dict()[name], value, rtol=0, atol=0)
    assert fitted.config.id2label == {0: "negative", 1: "positive"}
    assert read_json(tmp_path / "frozen/metrics.json")["accuracy"] == metrics["accuracy"]
    assert metrics["n_train_docs"] == 60 and metrics["n_docs"] == 20 and 0 <= metrics["accuracy"] <= 1
    # the fitted layer predicts what a regression on the frozen features predicts on the train split
    docs = read_documents(train)
    features = frozen_classifier.classifier_inputs(fitted.eval(), docs, 16, 0, torch.device("cpu"))
    layer = classifier_layer(fitted)
    logits = features @ layer.weight.detach().numpy().T + layer.bias.detach().numpy()
    weight, bias, _ = frozen_classifier.fit(features, docs.labels, True, 2, seed=0)
    np.testing.assert_allclose(logits, features @ weight.T + bias, rtol=1e-4, atol=1e-4)
