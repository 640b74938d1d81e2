"""A tiny boards corpus and a tiny model trained from scratch on it, through the stages' own `run`
functions (dataset, tokens, init_model, pretrain): shared by the scratch tests."""

from __future__ import annotations

from pathlib import Path

from workflow.datasets import abstractions as A
from workflow.stages import dataset, init_model, pretrain, tokens

# a 6x6 board, 4 roots of 2x2, composites of 2 roots: small enough to learn in seconds
BOARD = {**A.DEFAULTS, "board_dim": 6, "vocab_bck": 4, "vocab_token": 3, "abs_n": 5, "abs_dim": 2, "abs_c": 4}
BOARD |= {"comp_n": 2, "comp_dim": 2, "comp_c": 2, "comp_margin": 1, "card_test": 2}
TRAIN = {"epochs": 4, "batch_size": 32, "eval_batch_size": 128, "lr": 3e-3, "weight_decay": 0.01}
TRAIN |= {"warmup_fraction": 0.05, "max_grad_norm": 1.0, "snapshots": 5, "seed": 0, "bf16": "false"}
TRAIN |= {"log_every": 20, "checkpoint_every": 30, "positions": "2d", "mask_fraction": 0.15}


def corpus(
    root: Path,
    name: str = "boards",
    n_train: int = 800,
    n_test: int = 120,
    change: dict | None = None,
    board: dict | None = None,
) -> Path:
    spec = {"source": "abstractions", "board": board or BOARD, "n_train": n_train, "n_test": n_test, "seed": 0}
    if change:
        spec["change"] = change
    out = root / "data" / name
    dataset.run(name, spec, str(out))
    return out


def shape(family: str = "bert", positions: str = "2d", dropout: float = 0.1) -> dict:
    s = {"family": family, "layers": 2, "d_model": 32, "heads": 4, "kv_heads": None, "d_mlp": None}
    return {"scratch": {**s, "positions": positions, "seed": 0, "dropout": dropout}, "max_length": 64}


def tokenize(root: Path, data: Path, init: Path, name: str) -> dict[str, Path]:
    out = {}
    for split in ("train", "test"):
        out[split] = root / "tokens" / name / f"{split}.parquet"
        tokens.run(str(data / f"{split}.parquet"), str(init), 64, str(out[split]))
    return out


def trained(
    root: Path,
    family: str = "bert",
    positions: str = "2d",
    cfg: dict | None = None,
    n_train: int = 800,
    dropout: float = 0.1,
    board: dict | None = None,
) -> dict:
    """{"data", "init", "tokens", "trained", "metrics"} of a tiny scratch model trained on a corpus."""
    board = board or BOARD
    data = corpus(root, n_train=n_train, board=board)
    init = root / "init"
    init_model.run(shape(family, positions, dropout), A.vocabulary(board), board["board_dim"] ** 2, str(init))
    toks = tokenize(root, data, init, "boards")
    cfg = {**TRAIN, "positions": positions, **(cfg or {})}
    out = root / "trained"
    metrics = pretrain.run(str(init), str(toks["train"]), str(toks["test"]), board["board_dim"], cfg, str(out))
    return {"data": data, "init": init, "tokens": toks, "trained": out, "metrics": metrics}
