"""Stage `pretrain`: a model trained from scratch on boards, with log-spaced snapshots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.scratch_helpers import BOARD, trained
from workflow.models import scratch


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    return trained(tmp_path_factory.mktemp("scratch-bert"))


def test_training_lowers_the_masked_token_loss_and_saves_log_spaced_snapshots(bert_run):
    m, out = bert_run["metrics"], bert_run["trained"]
    assert m["objective"] == "masked"
    assert m["trained"]["loss"] < 0.6 * m["untrained"]["loss"]
    total = m["train"]["steps"]
    assert m["snapshot_steps"] == scratch.snapshot_steps(total, 5) and m["snapshot_steps"][-1] == total
    saved = sorted(p.name for p in (out / "steps").iterdir())
    assert saved == [f"step-{s:06d}" for s in m["snapshot_steps"]]
    assert not (out / "snapshots-partial").exists() and not (out / "checkpoint.pt").exists()
    assert json.loads((out / "checksums.json").read_text())["files"]  # the folder is verifiable


def test_the_final_model_is_the_last_snapshot_and_loads_as_a_plain_model(bert_run):
    from transformers import AutoModelForMaskedLM

    out = bert_run["trained"]
    final = AutoModelForMaskedLM.from_pretrained(out / "final")
    last = AutoModelForMaskedLM.from_pretrained(out / "steps" / f"step-{bert_run['metrics']['snapshot_steps'][-1]:06d}")
    for (name, a), (_, b) in zip(final.state_dict().items(), last.state_dict().items()):
        assert torch.equal(a, b), name
    # 2d positions: the saved table of the board's cells is row + column
    table = final.bert.embeddings.position_embeddings.weight.detach().numpy()
    n, o = BOARD["board_dim"], scratch.OFFSET
    cell = lambda i, j: o + n * i + j  # noqa: E731
    residual = [
        table[cell(i, j)] - table[cell(i, 0)] - table[cell(0, j)] + table[cell(0, 0)]
        for i in range(n)
        for j in range(n)
    ]
    assert np.abs(residual).max() < 1e-5
    early = AutoModelForMaskedLM.from_pretrained(out / "steps" / "step-000001")
    assert not torch.equal(early.bert.embeddings.word_embeddings.weight, final.bert.embeddings.word_embeddings.weight)


def test_a_decoder_trains_on_next_tokens(tmp_path):
    run = trained(tmp_path, family="gpt2", cfg={"epochs": 2})
    assert run["metrics"]["objective"] == "causal"
    assert run["metrics"]["trained"]["loss"] < 0.8 * run["metrics"]["untrained"]["loss"]


def test_a_killed_run_resumes_from_its_checkpoint_with_its_snapshots(tmp_path, monkeypatch):
    """Kill training after its first checkpoint: the re-run resumes there, keeps the snapshots
    saved before, and ends at the weights of an uninterrupted run."""
    from tests.scratch_helpers import TRAIN
    from workflow.models import training
    from workflow.stages import pretrain

    whole = trained(tmp_path / "whole", cfg={"epochs": 2})
    real = training.train

    def killed(*args, **kwargs):
        on_step = kwargs.get("on_step") or args[8]

        def dying(step, total):
            on_step(step, total)
            if step == TRAIN["checkpoint_every"] + 1:
                raise KeyboardInterrupt

        kwargs["on_step"] = dying
        return real(*args[:8], **kwargs)

    monkeypatch.setattr(pretrain, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        trained(tmp_path / "again", cfg={"epochs": 2})
    partial = tmp_path / "again" / "trained"
    assert (partial / "checkpoint.pt").exists() and (partial / "snapshots-partial").is_dir()
    monkeypatch.setattr(pretrain, "train", real)
    again = trained(tmp_path / "again", cfg={"epochs": 2})
    a = (whole["trained"] / "final" / "model.safetensors").read_bytes()
    b = (again["trained"] / "final" / "model.safetensors").read_bytes()
    assert a == b
    assert again["metrics"]["snapshot_steps"] == whole["metrics"]["snapshot_steps"]


def test_a_killed_pretrain_job_resumes_to_the_same_model(tmp_path):
    """kill -9 of Snakemake and the pretrain job after a checkpoint, --unlock, the same command:
    training resumes (the log says so) and ends with the uninterrupted run's model and snapshots."""
    import yaml

    from tests.conftest import run_snakemake
    from tests.kills import KillRun
    from workflow import layout

    study = tmp_path / "study"
    study.mkdir()
    scratch_block = {"family": "bert", "corpus": "boards", "layers": 2, "d_model": 32, "positions": "2d"}
    scratch_block |= {"epochs": 2, "batch_size": 16, "snapshots": 4, "checkpoint_every": 4, "log_every": 5}
    cfg = {
        "models": {"net": {"source": "scratch", "scratch": scratch_block}},
        "datasets": {"boards": {"source": "abstractions", "board": BOARD, "n_train": 96, "n_test": 16}},
        "layers": [2],
        "saes": {},
    }
    (study / "study.yaml").write_text(yaml.safe_dump(cfg))
    target = layout.SCRATCH.file("metrics", model="net")
    done = run_snakemake(study, "--cores", "2", target, "--configfile", "study.yaml")
    assert done.returncode == 0, done.stderr[-4000:]
    run = KillRun(study, "pretrain", target, tmp_path)
    clean, killed, log = run.run(seed=3, after=layout.SCRATCH.names["checkpoint"])
    assert "resuming from" in log, log
    run.assert_same(clean, killed, layout.SCRATCH.path(model="net"))
