"""The similarity stage: identical models are identical at every layer; known differences show."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from workflow.stages import dataset, similarity, tokens

CFG = {"max_tokens": 100000, "batch_size": 8, "include_special": True}


@pytest.fixture(scope="module")
def tokens_path(tiny_bert, tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    spec = {
        "source": "builtin",
        "task": "app_rating",
        "n_train": 60,  # 3 or more documents of each of the 5 classes
        "n_test": 40,
        "label_noise": 0.0,
        "seed": 0,
        "max_train": None,
        "max_test": None,
    }
    dataset.run("apps", spec, str(out))
    tokens.run(str(out / "test.parquet"), str(tiny_bert), 64, str(out / "tokens.parquet"))
    return out / "tokens.parquet"


def test_a_model_compared_with_itself_is_unchanged(tiny_bert, tokens_path, tmp_path):
    table = similarity.run(
        str(tiny_bert), str(tiny_bert), str(tokens_path), CFG, str(tmp_path / "s.parquet"), str(tmp_path / "s.png")
    )
    assert table["layer"].to_list() == [0, 1, 2]
    assert table["n_tokens"].to_list() == [len(pl.read_parquet(tokens_path))] * 3
    for column in ("mean_cosine", "token_cosine", "cka_biased", "cka_debiased", "norm_ratio"):
        assert table[column].to_list() == pytest.approx([1.0] * 3, abs=1e-9), column
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_changing_only_the_last_block_changes_only_the_last_layer(tiny_bert, tokens_path, tmp_path):
    from transformers import AutoModel

    edited = AutoModel.from_pretrained(tiny_bert)
    with torch.no_grad():
        torch.manual_seed(1)
        edited.encoder.layer[1].output.dense.weight.normal_(0.0, 1.0)  # block 2's MLP output: new, large weights
    edited.save_pretrained(tmp_path / "edited")
    table = similarity.compare(
        str(tiny_bert),
        str(tmp_path / "edited"),
        str(tokens_path),
        max_tokens=100000,
        batch_size=8,
        include_special=False,
    )
    n_docs = pl.read_parquet(tokens_path)["doc_id"].n_unique()
    assert table["n_tokens"][0] == len(pl.read_parquet(tokens_path)) - 2 * n_docs  # [CLS] and [SEP] left out
    assert table["cka_debiased"][0] == pytest.approx(1.0, abs=1e-9)
    assert table["cka_debiased"][1] == pytest.approx(1.0, abs=1e-9)
    assert table["cka_debiased"][2] < 0.9 and table["token_cosine"][2] < 0.9
