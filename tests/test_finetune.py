"""Fine-tuning lifts a tiny random model well above chance on a built-in task."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForSequenceClassification

from workflow.stages import dataset, finetune, tokens
from workflow.store.files import read_json

CFG = {
    "epochs": 4,
    "batch_size": 32,
    "eval_batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 0.01,
    "warmup_fraction": 0.1,
    "max_grad_norm": 1.0,
    "max_train_docs": None,
    "seed": 0,
    "bf16": False,
    "log_every": 20,
}


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_finetune_lifts_accuracy(which, tiny_bert, tiny_gpt2, tmp_path):
    model = tiny_bert if which == "bert" else tiny_gpt2
    spec = {
        "source": "builtin",
        "task": "movie_sentiment",
        "n_train": 1200,
        "n_test": 300,
        "label_noise": 0.0,
        "seed": 0,
        "max_train": None,
        "max_test": None,
    }
    dataset.run("movie_sentiment", spec, str(tmp_path / "data"))
    for split in ("train", "test"):
        tokens.run(str(tmp_path / f"data/{split}.parquet"), str(model), 64, str(tmp_path / f"{split}.parquet"))
    out = tmp_path / "ft"
    metrics = finetune.run(
        str(model),
        str(tmp_path / "train.parquet"),
        str(tmp_path / "test.parquet"),
        str(tmp_path / "data/meta.json"),
        CFG,
        str(out),
    )
    chance = 1 / 2
    assert metrics["pretrained"]["accuracy"] < chance + 0.1
    assert metrics["finetuned"]["accuracy"] > chance + 0.25, metrics["finetuned"]
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    # the folder is a plain save_pretrained checkpoint any transformers user can load
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.id2label[1] == "positive" and reloaded.num_labels == 2
    assert read_json(tmp_path / "data/meta.json")["bow_baseline"]["accuracy"] < 1.0
