"""Stage `init_model` and `workflow.models.scratch`: untrained models of any family, their word-level
tokenizer, and 2D (row + column) positions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workflow.datasets import abstractions as A
from workflow.models import scratch, sources
from workflow.models.families import lm_kind, model_family
from workflow.stages import init_model

VOCAB = A.vocabulary(A.DEFAULTS)
CELLS = A.DEFAULTS["board_dim"] ** 2


def spec(family="bert", **shape) -> dict:
    s = {"family": family, "corpus": "boards", "layers": 2, "d_model": 32, "heads": 4, "kv_heads": None}
    s |= {"d_mlp": None, "positions": "learned", "seed": 0, **shape}
    return {"scratch": s, "max_length": 128}


@pytest.mark.parametrize(
    "family",
    ["bert", "roberta", "distilbert", "gpt2", "gpt_neo", "gpt_neox", "llama", "mistral", "qwen3", "gemma3_text"],
)
def test_an_untrained_model_of_each_family_saves_loads_and_reads_boards(family, tmp_path):
    config = init_model.run(spec(family), VOCAB, CELLS, str(tmp_path / "init"))
    folder = tmp_path / "init"
    on_disk = json.loads((folder / "config.json").read_text())
    assert model_family(on_disk) == model_family(config)
    assert sources.n_layers(on_disk) == 2 and sources.d_model(on_disk) == 32
    assert sources.n_positions(on_disk) >= CELLS + 2
    assert lm_kind(on_disk) == scratch.objective(family)  # the saved head is the one validation expects
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    board, _ = A.generate(A.DEFAULTS, None, 1, 1, 0)
    enc = tok(board[0]["text"], return_offsets_mapping=True)
    ids = enc["input_ids"]
    assert ids[0] == scratch.CLS and len(ids) == CELLS + (2 if family in scratch.ENCODERS else 1)
    assert scratch.UNK not in ids  # every board token is in the vocabulary
    words = board[0]["text"].split(" ")
    pieces = [board[0]["text"][a:b] for a, b in enc["offset_mapping"] if b > a]
    assert pieces == words  # one token per cell, offsets on the cells (planted spans map onto them)
    model = scratch.build(config, 0)
    model.load_state_dict(
        __import__("safetensors.torch", fromlist=["load_file"]).load_file(folder / "model.safetensors"), strict=False
    )
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]))
    assert out.logits.shape == (1, len(ids), len(scratch.SPECIALS) + len(VOCAB))


@pytest.mark.parametrize("family", list(scratch.DROPOUT_KEYS) + ["llama", "qwen3", "gemma2"])
def test_dropout_is_every_dropout_of_the_family(family):
    """dropout 0 (the default): two training-mode passes agree; dropout 0.5: they differ."""
    ids = torch.randint(5, 25, (2, 20))
    for p, same in ((0.0, True), (0.5, False)):
        model = scratch.build(scratch.model_config(spec(family, dropout=p), VOCAB, CELLS), 0).train()
        with torch.no_grad():
            assert torch.allclose(model(input_ids=ids).logits, model(input_ids=ids).logits) is same, (family, p)


def test_2d_positions_are_row_plus_column_and_save_as_a_plain_table(tmp_path):
    config = scratch.model_config(spec(positions="2d"), VOCAB, CELLS)
    model = scratch.build(config, 0)
    scratch.factorise_positions(model, 8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # as if trained
    state = scratch.materialised_state_dict(model)
    table = state["bert.embeddings.position_embeddings.weight"].numpy()
    cell = lambda i, j: scratch.OFFSET + 8 * i + j  # noqa: E731
    for i, j in [(0, 0), (3, 5), (7, 7), (2, 1)]:
        want = table[cell(i, 0)] + table[cell(0, j)] - table[cell(0, 0)]
        np.testing.assert_allclose(table[cell(i, j)], want, atol=1e-5)
    assert not any(".parametrizations." in k for k in state)
    plain = scratch.build(config, 1)
    plain.load_state_dict(state)
    model.eval(), plain.eval()  # from_config builds in training mode: dropout would differ
    ids = torch.randint(5, 25, (2, CELLS + 2))
    with torch.no_grad():
        np.testing.assert_allclose(plain(input_ids=ids).logits.numpy(), model(input_ids=ids).logits.numpy(), atol=1e-5)


def test_shape_problems_name_their_key():
    assert any("scratch.heads" in p for p in scratch.check(spec(d_model=30), "models.m"))
    assert any("scratch.kv_heads" in p for p in scratch.check(spec("bert", kv_heads=2), "models.m"))
    assert any("scratch.positions" in p for p in scratch.check(spec("llama", positions="2d"), "models.m"))
    assert scratch.check(spec("llama", kv_heads=2), "models.m") == []
    assert any("scratch.family" in p for p in scratch.check(spec("qwen2"), "models.m"))


def test_snapshot_steps_are_log_spaced_and_end_at_the_last_step():
    steps = scratch.snapshot_steps(1000, 6)
    assert steps[0] == 1 and steps[-1] == 1000 and len(steps) == 6
    ratios = np.diff(np.log(steps))
    np.testing.assert_allclose(ratios, ratios.mean(), rtol=0.05)
    assert scratch.snapshot_steps(3, 8) == [1, 2, 3]
