"""Stage `frozen_classifier`: a logistic regression on the frozen body's features, folded into the model's
own final layer, so the folder loads as a classifier that predicts what the regression predicts (the fit
itself: tests/analysis/test_linear_head.py)."""

from __future__ import annotations

import numpy as np
import torch

from tests.conftest import tokens_table
from workflow.analysis import linear_head
from workflow.models import loading
from workflow.models.classifier import classifier_layer
from workflow.stages import frozen_classifier
from workflow.store.files import read_json
from workflow.store.tokens import read_documents

CFG = {"seed": 0, "max_train_docs": None, "eval_batch_size": 16}


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
    weight, bias, _ = linear_head.fit(features, docs.labels, True, 2, seed=0)
    np.testing.assert_allclose(logits, features @ weight.T + bias, rtol=1e-4, atol=1e-4)
