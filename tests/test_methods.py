"""Stage `methods`: the methods' labels side by side and their agreement (confusion, kappa), on
tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.analysis.agreement import agreement


def test_agreement_counts_and_kappa():
    a = np.array(["kept", "kept", "changed", "removed", "kept", ""])
    b = np.array(["kept", "changed", "changed", "removed", "kept", "kept"])  # the last is unlabelled in a
    out = agreement(a, b)
    assert out["n"] == 5 and out["labels"] == ["kept", "changed", "removed"]
    assert out["confusion"] == [[2, 1, 0], [0, 1, 0], [0, 0, 1]]
    # observed 4/5; chance (3/5 * 2/5 + 1/5 * 2/5 + 1/5 * 1/5) = 9/25
    assert out["kappa"] == pytest.approx((0.8 - 9 / 25) / (1 - 9 / 25))
    assert agreement(a, a)["kappa"] == 1.0
