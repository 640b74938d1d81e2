"""Fine-tuning lifts a tiny random model well above chance on a built-in task."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForSequenceClassification

from tests.tiny_models import MODEL_TYPES, make_tiny
from workflow.models import finetuning
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


# news_topic: 5 topics, the headline decides (chance 0.2); small enough for 13 families in CI
SMALL = {"source": "builtin", "task": "news_topic", "n_train": 800, "n_test": 200, "label_noise": 0.0, "seed": 0}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-data")
    dataset.run("news_topic", {**SMALL, "max_train": None, "max_test": None}, str(folder))
    return folder


def _finetune(model, data, tmp_path, **overrides) -> dict:
    for split in ("train", "test"):
        tokens.run(str(data / f"{split}.parquet"), str(model), 48, str(tmp_path / f"{split}.parquet"))
    return finetune.run(
        str(model),
        str(tmp_path / "train.parquet"),
        str(tmp_path / "test.parquet"),
        str(data / "meta.json"),
        {**CFG, "epochs": 4, "batch_size": 16, "lr": 3e-3, **overrides},
        str(tmp_path / "ft"),
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_family_fine_tunes_above_chance(model_type, small_data, tmp_path):
    model = make_tiny(model_type, tmp_path / "model")
    metrics = _finetune(model, small_data, tmp_path)
    chance = 1 / 5
    assert metrics["finetuned"]["accuracy"] > chance + 0.5, metrics["finetuned"]
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft")
    assert reloaded.config.model_type == model_type and reloaded.num_labels == 5


@pytest.mark.parametrize("model_type", ["bert", "llama", "gpt_neox"])
def test_the_classifier_reads_its_familys_position(model_type, tmp_path):
    """Padding a document does not change its logits: encoders read the first token, decoders the last
    real one (not the last position)."""
    import torch

    from workflow.models import loading

    folder = make_tiny(model_type, tmp_path / "model")
    tokenizer = loading.load_tokenizer(str(folder))
    model = loading.load_classifier(str(folder), 2, tokenizer.pad_token_id)
    texts = ["a good film", "the minister met the press at the summit today"]
    with torch.inference_mode():
        batch = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in texts])
    torch.testing.assert_close(batch, alone, rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_trains_the_same_model(small_data, tmp_path):
    model = make_tiny("llama", tmp_path / "model")
    plain = _finetune(model, small_data, tmp_path / "plain", epochs=1)
    ckpt = _finetune(model, small_data, tmp_path / "ckpt", epochs=1, gradient_checkpointing=True)
    assert ckpt["finetuned"]["accuracy"] == pytest.approx(plain["finetuned"]["accuracy"], abs=0.01)
    assert ckpt["finetuned"]["loss"] == pytest.approx(plain["finetuned"]["loss"], rel=1e-3)


LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}


def _lm_finetune(model_type: str, data, tmp_path, kind: str, method: str, **overrides) -> tuple[dict, object]:
    from workflow.models.families import FAMILIES, MODEL_TYPES

    model = make_tiny(model_type, tmp_path / "model")
    lora = {**LORA, "target_modules": list(FAMILIES[MODEL_TYPES[model_type]].lora_targets)}
    cfg = {"kind": kind, "method": method, "epochs": 2, **({"lora": lora} if method == "lora" else {}), **overrides}
    return _finetune(model, data, tmp_path, **cfg), model


@pytest.mark.parametrize(("model_type", "method"), [("gpt2", "full"), ("gpt2", "lora"), ("llama", "lora")])
def test_causal_lm_fine_tuning_lowers_the_test_next_token_loss(model_type, method, small_data, tmp_path):
    lr = 3e-3 if method == "full" else 1e-2
    metrics, _ = _lm_finetune(model_type, small_data, tmp_path, "causal_lm", method, lr=lr)
    before, after = metrics["pretrained"]["loss"], metrics["finetuned"]["loss"]
    # a random model starts near log(vocab) = 6.4; attention adapters alone on a random body gain less
    assert after < (0.8 * before if method == "full" else before - 0.15), (before, after)
    assert metrics["finetuned"]["perplexity"] < metrics["pretrained"]["perplexity"]
    if method == "lora":  # only the adapters train
        assert metrics["train"]["trainable_parameters"] < 0.2 * metrics["train"]["parameters"]
        assert (tmp_path / "ft" / "adapter" / "adapter_config.json").is_file()
    else:
        assert metrics["train"]["trainable_parameters"] == metrics["train"]["parameters"]


def test_merged_lora_model_equals_the_peft_model(small_data, tmp_path):
    """The merged save_pretrained folder every later stage loads gives the logits of base + adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workflow.models import loading

    _, base = _lm_finetune("gpt2", small_data, tmp_path, "causal_lm", "lora", lr=1e-2, epochs=1)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "ft").eval()
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "ft" / "adapter")
    tokenizer = loading.load_tokenizer(str(base))
    inputs = tokenizer(["the film was wonderful", "the minister met the press"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = with_adapter.eval()(**inputs).logits
        got = merged(**inputs).logits
        plain = AutoModelForCausalLM.from_pretrained(base).eval()(**inputs).logits
    assert (expected - plain).abs().max() > 1e-2  # the adapter changed the model
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_masked_lm_fine_tuning_lowers_the_masked_token_loss(small_data, tmp_path):
    metrics, _ = _lm_finetune("bert", small_data, tmp_path, "masked_lm", "full", lr=3e-3, epochs=3)
    before, after = metrics["pretrained"]["loss"], metrics["finetuned"]["loss"]
    assert after < 0.8 * before, (before, after)
    from transformers import AutoModelForMaskedLM

    assert AutoModelForMaskedLM.from_pretrained(tmp_path / "ft").config.model_type == "bert"


@pytest.mark.parametrize("model_type", ["gpt2", "gpt_neox", "llama", "gemma2"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_fused_next_token_loss_equals_the_models_own(model_type, method, tmp_path):
    """The LM head fused with the loss (chunked, padding and last positions skipped) gives the
    loss and every gradient of `model(..., labels=...)`; Gemma 2's soft-capped logits included."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from workflow.models import lm
    from workflow.models.families import FAMILIES, MODEL_TYPES

    model = AutoModelForCausalLM.from_pretrained(make_tiny(model_type, tmp_path / "m"), attn_implementation="eager")
    if model_type == "gemma2":
        assert model.config.final_logit_softcapping
    if method == "lora":
        lora = {**LORA, "target_modules": list(FAMILIES[MODEL_TYPES[model_type]].lora_targets)}
        model = finetuning.with_lora(model, MODEL_TYPES[model_type], lora, "causal")
    model.eval()
    assert lm._split_head(model) is not None  # the fused path is taken
    ids = torch.randint(5, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    attention[1, 7:], attention[2, 2:] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": attention}
    reference = copy.deepcopy(model)
    fused = lm.next_token_loss(model, inputs, chunk=7 * model.config.vocab_size)  # several chunks
    expected = reference(**inputs, labels=ids.masked_fill(attention == 0, -100)).loss
    fused.backward()
    expected.backward()
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=1e-5)
    grads = [
        (n, p.grad, q.grad) for (n, p), q in zip(model.named_parameters(), reference.parameters()) if p.requires_grad
    ]
    assert grads and all(g is not None for _, g, _ in grads)
    for name, got, want in grads:
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4, msg=name)


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize(
    ("kind", "every"), [("classify", 7), ("classify", 25), ("masked_lm", 7)], ids=["mid-epoch", "epoch-end", "mlm"]
)
def test_interrupted_fine_tuning_resumes_to_the_same_weights(kind, every, small_data, tmp_path, monkeypatch, caplog):
    """Stopped at step 60 of 100 (checkpoints every 7 or 25 steps), the re-run resumes from the last
    checkpoint, says so, and ends bit for bit where an uninterrupted run ends: dropout, the masking
    draws and the order of the next epoch included."""
    import logging

    import torch

    model = make_tiny("bert", tmp_path / "model")
    cfg = {"epochs": 2, "checkpoint_every": every, **({"kind": kind, "method": "full"} if kind != "classify" else {})}
    full = _finetune(model, small_data, tmp_path / "full", **cfg)
    assert full["train"]["steps"] == 100  # 800 documents in batches of 16, twice
    from workflow.models import training  # the training loop fine-tuning shares with pretrain

    original, seen = training.batches, []

    def stopped(*args, **kwargs):
        for batch in original(*args, **kwargs):
            seen.append(1)
            if len(seen) > 60:
                raise KeyboardInterrupt("simulated kill")
            yield batch

    monkeypatch.setattr(training, "batches", stopped)
    with pytest.raises(KeyboardInterrupt):
        _finetune(model, small_data, tmp_path / "again", **cfg)
    out = tmp_path / "again/ft"
    assert (out / finetune.CHECKPOINT).exists() and not (out / "metrics.json").exists()
    monkeypatch.setattr(training, "batches", original)
    caplog.set_level(logging.INFO, logger="workflow.models.resume")
    resumed = _finetune(model, small_data, tmp_path / "again", **cfg)
    assert f"resuming from {out / finetune.CHECKPOINT} at step {60 // every * every}/100" in caplog.text
    assert not (out / finetune.CHECKPOINT).exists()  # the finished folder replaced it
    a, b = _weights(tmp_path / "full/ft"), _weights(out)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["finetuned"] == full["finetuned"] and resumed["train"]["tokens"] == full["train"]["tokens"]


def test_a_checkpoint_of_another_config_is_not_resumed(small_data, tmp_path, caplog):
    import logging

    import torch

    (tmp_path / "ft").mkdir()
    torch.save({"fingerprint": "another config"}, tmp_path / "ft" / finetune.CHECKPOINT)
    caplog.set_level(logging.INFO, logger="workflow.models.resume")
    _finetune(make_tiny("bert", tmp_path / "model"), small_data, tmp_path, epochs=1)
    assert "ignoring" in caplog.text and "resuming" not in caplog.text


@pytest.mark.workflow
def test_a_killed_finetune_job_resumes_to_the_same_model(kill_study, tmp_path):
    """kill -9 of Snakemake and the job after a checkpoint, --unlock, the same command: the job
    resumes from the checkpoint (its log says so) and ends with the uninterrupted run's model."""
    from tests.kills import KillRun

    folder = "results/models/bert/classify/news"
    run = KillRun(kill_study, "finetune", f"{folder}/metrics.json", tmp_path)
    clean, killed, log = run.run(seed=0, after=finetune.CHECKPOINT)
    assert "resuming from" in log, log
    run.assert_same(clean, killed, folder)


def test_windowed_documents_train_per_window_and_score_per_document(small_data, tmp_path):
    """With max_length 12 and stride 2 every news document becomes several windows: fine-tuning
    steps over the train windows, and both scores count each test document once."""
    import math

    import polars as pl

    model = make_tiny("bert", tmp_path / "model")
    for split in ("train", "test"):
        tokens.run(str(small_data / f"{split}.parquet"), str(model), 12, str(tmp_path / f"{split}.parquet"), stride=2)
    n_train = pl.read_parquet(tmp_path / "train.parquet").select(pl.struct("doc_id", "window").n_unique()).item()
    assert n_train > 2 * SMALL["n_train"]  # windowed, not truncated
    metrics = finetune.run(
        str(model),
        str(tmp_path / "train.parquet"),
        str(tmp_path / "test.parquet"),
        str(small_data / "meta.json"),
        {**CFG, "epochs": 3, "batch_size": 16, "lr": 1e-3},
        str(tmp_path / "ft"),
    )
    assert metrics["train"]["steps"] == 3 * math.ceil(n_train / 16)
    for variant in ("pretrained", "finetuned"):
        assert metrics[variant]["n_docs"] == SMALL["n_test"] and metrics[variant]["n_windows"] > 2 * SMALL["n_test"]
    assert metrics["finetuned"]["accuracy"] > 1 / 5 + 0.3, metrics["finetuned"]  # chance is 0.2


def test_the_fine_tune_trains_only_on_the_documents_the_dataset_marks(tmp_path, tiny_bert):
    """A boards dataset with a declared change: its train split adds original boards for the analyses
    (finetune false), and the fine-tune reads only the changed ones."""
    from workflow.datasets import abstractions as A

    board = {**A.DEFAULTS, "board_dim": 6, "abs_n": 4, "abs_dim": 2, "abs_c": 4, "comp_n": 2, "comp_c": 2}
    change = {"removed": [2], "new": 1, "original_boards": 30}
    spec = {"source": "abstractions", "board": board, "change": change, "n_train": 50, "n_test": 20, "seed": 0}
    dataset.run("b", spec, str(tmp_path / "data"))
    tokens.run(str(tmp_path / "data/train.parquet"), str(tiny_bert), 64, str(tmp_path / "train.parquet"))
    docs = finetune.training_documents(str(tmp_path / "train.parquet"), str(tmp_path / "data/train.parquet"), CFG)
    assert len(docs.token_ids) == 50 and docs.doc_ids.tolist() == list(range(50))  # the changed boards come first
    everything = finetune.training_documents(str(tmp_path / "train.parquet"), None, CFG)
    assert len(everything.token_ids) == 80
