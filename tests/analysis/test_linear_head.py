"""`workflow.analysis.linear_head`: a logistic regression folded into a linear layer's own units."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.analysis import linear_head


@pytest.mark.parametrize("has_bias,n_labels", [(True, 2), (False, 2), (True, 3)])
def test_the_folded_layer_gives_the_regressions_probabilities(has_bias, n_labels):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((300, 6)) * [1, 2, 3, 0.5, 5, 1] + [0, 3, -2, 1, 0, 4]).astype(np.float32)
    scores = x @ rng.standard_normal((6, n_labels))  # labels a linear function decides
    y = scores.argmax(1)
    weight, bias, probe = linear_head.fit(x, y, has_bias, n_labels, seed=0)
    assert weight.shape == (n_labels, 6)
    logits = x @ weight.T + (bias if has_bias else 0)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    mu = x.mean(0) if has_bias else 0
    sigma = x.std(0) + 1e-6
    np.testing.assert_allclose(probs, probe.predict_proba((x - mu) / sigma), rtol=1e-4, atol=1e-6)
    assert (probs.argmax(1) == y).mean() > 0.9


@pytest.mark.parametrize("has_bias", [True, False])
def test_a_binary_fit_splits_one_logit_into_two_opposite_halves(has_bias):
    """Labels decided by the sign of feature 2 (shifted by 5 with a bias): the two rows are -w/2 and w/2,
    the weight sits on feature 2, the boundary is recovered, and without a bias the bias is zero."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 4))
    shift = 5.0 if has_bias else 0.0
    x[:, 2] += shift
    y = (x[:, 2] > shift).astype(int)
    weight, bias, probe = linear_head.fit(x, y, has_bias, 2, seed=0)
    np.testing.assert_allclose(weight[0], -weight[1])
    np.testing.assert_allclose(bias[0], -bias[1])
    z = probe.coef_[0] / (x.std(0) + 1e-6)  # the regression's own logit, in the features' units
    np.testing.assert_allclose(weight[1] - weight[0], z)
    assert np.argmax(np.abs(weight[1])) == 2 and weight[1, 2] > 0
    if has_bias:
        assert -bias[1] / weight[1, 2] == pytest.approx(shift, abs=0.3)  # the boundary x2 = shift
    else:
        np.testing.assert_array_equal(bias, np.zeros(2))
    assert ((x @ weight.T + bias).argmax(1) == y).mean() > 0.97
