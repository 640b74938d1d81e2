"""A classifier's final linear layer fitted on frozen features (stage `frozen_classifier`).

Cross-validated logistic regression (scikit-learn) on the inputs of the layer, its result
expressed in the layer's own units, so that copying (weight, bias) into the layer makes the
model predict what the regression predicts.
"""

from __future__ import annotations

import numpy as np


def fit(features: np.ndarray, labels: np.ndarray, has_bias: bool, n_labels: int, seed: int):
    """(weight, bias, the fitted scikit-learn model) of a logistic regression on the features, in the layer's
    own units: features (n, in_features), labels (n,) in 0..n_labels-1; weight (n_labels, in_features),
    bias (n_labels,).

    Features are standardised for a fast, well-conditioned fit, and the scaling is folded back
    into the weights (without a bias, as GPT-2's score layer, they are only scaled, not centred).
    """
    from sklearn.linear_model import LogisticRegressionCV

    mu = features.mean(0) if has_bias else np.zeros(features.shape[1], dtype=features.dtype)
    sigma = features.std(0) + 1e-6
    probe = LogisticRegressionCV(
        Cs=np.logspace(-3, 1, 5),
        cv=3,
        l1_ratios=(0.0,),
        scoring="accuracy",
        max_iter=500,
        tol=1e-3,
        fit_intercept=has_bias,
        random_state=seed,
        use_legacy_attributes=False,
    )
    probe.fit((features - mu) / sigma, labels)
    coef = probe.coef_ / sigma
    intercept = probe.intercept_ - coef @ mu if has_bias else np.zeros(len(coef))
    if n_labels == 2 and coef.shape[0] == 1:  # binary: softmax over (-z/2, z/2) equals sigmoid(z)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    return coef, np.asarray(intercept), probe
