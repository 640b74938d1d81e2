"""`workflow.analysis.ablation.ablation_rows`: the long rows of ablation.parquet from summed metrics.
(Ablation itself, batched against the naive loop and on heads with known effects: tests/test_heads.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from workflow.analysis.ablation import ablation_rows


def test_rows_are_means_and_changes_from_the_clean_run():
    clean = np.array([8.0, 6.0])  # summed loss and correct predictions over 8 documents
    ablated = np.zeros((2, 2, 3, 2))  # (modes, blocks, heads, metrics)
    ablated[..., 0], ablated[..., 1] = 8.0, 6.0
    ablated[1, 1, 2] = [12.0, 4.0]  # mode "mean", block 2, head 2
    rows = ablation_rows("task", ["zero", "mean"], clean, ablated, 8)
    assert len(rows) == 12
    last = rows[-1]
    assert (last["mode"], last["layer"], last["head"]) == ("mean", 2, 2)  # 1-based layers, 0-based heads
    assert last["loss"] == 1.5 and last["delta_loss"] == pytest.approx(0.5)
    assert last["accuracy"] == 0.5 and last["delta_accuracy"] == pytest.approx(-0.25)
    assert all(r["delta_loss"] == 0.0 for r in rows[:-1])


def test_lm_rows_have_no_accuracy():
    rows = ablation_rows("lm", ["zero"], np.array([10.0, 5.0]), np.full((1, 1, 1, 2), 15.0), 5)
    assert rows == [
        {
            "measure": "lm",
            "mode": "zero",
            "layer": 1,
            "head": 0,
            "loss": 3.0,
            "delta_loss": 1.0,
            "accuracy": None,
            "delta_accuracy": None,
        }
    ]
