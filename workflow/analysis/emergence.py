"""The maths of stage `emergence`: where and when known factors become linearly decodable, and how
well one SAE's latents line up with them.

Probes. A factor is a binary property of a token (``root_3``: the cell lies in root 3's footprint)
or of a board (``board_type``, multi-class; ``has_root_3``). Each probe is an L2 logistic regression
on standardised activations with balanced class weights, fitted on train and scored on test;
``balanced_accuracy`` is the mean recall over classes (0.5 is chance for a binary factor, whatever
its base rate), ``accuracy`` the plain share correct.

Selectivity (after Hewitt and Liang 2019, "Designing and Interpreting Probes with Control Tasks"):
the same probe is fitted on a *control task* that keeps what something the representation carries
trivially says of the factor and nothing else: the factor's labels permuted at random within each
class of the control (for tokens the token's identity, for boards the board's background token),
separately in each split. ``selectivity`` = balanced accuracy on the factor minus balanced accuracy
on its control: high only where the layer encodes the factor beyond what identity predicts (a cell
of root 3 is not told apart by its token, which other roots use too, but by its neighbours).

SAE alignment. ``best_f1``: for each factor, the best F1 of one latent's "fires" (code > 0) as a
detector of the factor's tokens. ``mcc``: the mean correlation coefficient after matching latents
to factors one to one (Hungarian on |Pearson correlation| of latent activations with the factor
indicators), the standard score of identifiability work (e.g. Khemakhem et al. 2020).
"""

from __future__ import annotations

import numpy as np


def control_labels(types: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """The control task: `labels` permuted at random within each class of `types` (token identity,
    background). What identity alone predicts of the factor survives; what context adds does not."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    for t in np.unique(types):
        at = np.flatnonzero(types == t)
        out[at] = labels[rng.permutation(at)]
    return out


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def probe(x_train, y_train, x_test, y_test, C: float = 1.0, max_iter: int = 300) -> dict:
    """Accuracy and balanced accuracy of a balanced-class-weight logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    if len(np.unique(y_train)) < 2 or len(np.unique(y_test)) < 2:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan")}
    model = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced", tol=1e-3)
    model.fit(x_train, y_train)
    pred = model.predict(x_test)
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
    }


def probe_with_control(x_train, y_train, t_train, x_test, y_test, t_test, seed: int, C: float = 1.0) -> dict:
    """`probe` on the factor and on its control task (labels permuted within each type `t_*`, in
    each split), and the selectivity: balanced accuracy on the factor minus on the control."""
    x_train, x_test = _standardise(x_train, x_test)
    task = probe(x_train, y_train, x_test, y_test, C)
    c_train = control_labels(t_train, y_train, seed)
    c_test = control_labels(t_test, y_test, seed + 1)
    control = probe(x_train, c_train, x_test, c_test, C)
    return {
        **task,
        "control_balanced_accuracy": control["balanced_accuracy"],
        "selectivity": task["balanced_accuracy"] - control["balanced_accuracy"],
    }


def detector_f1(x_train, y_train, x_test, y_test, C: float = 1.0, max_iter: int = 300) -> float:
    """F1 of one linear unit (a logistic regression, threshold 0.5) as a detector of a factor's tokens
    among all tokens: the most a single SAE latent, itself a thresholded linear function of the
    activation, could reach on these tokens."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    if len(np.unique(y_train)) < 2:
        return float("nan")
    x_train, x_test = _standardise(x_train, x_test)
    model = LogisticRegression(C=C, max_iter=max_iter, tol=1e-3).fit(x_train, y_train)
    return float(f1_score(y_test, model.predict(x_test), zero_division=0.0))


def best_f1(codes: np.ndarray, member: np.ndarray) -> tuple[int, float, float, float]:
    """The latent whose firing best detects `member` tokens: (latent, F1, precision, recall)."""
    fires = codes > 0
    tp = (fires & member[:, None]).sum(0).astype(np.float64)
    n_fire = fires.sum(0).astype(np.float64)
    n_member = float(member.sum())
    precision = np.divide(tp, n_fire, out=np.zeros_like(tp), where=n_fire > 0)
    recall = tp / max(n_member, 1.0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    i = int(np.argmax(f1))
    return i, float(f1[i]), float(precision[i]), float(recall[i])


THRESHOLDS = tuple(i / 10 for i in range(10))  # fractions of a latent's largest activation


def best_threshold_f1(codes: np.ndarray, member: np.ndarray, fractions=THRESHOLDS) -> tuple[int, float, float]:
    """The latent and threshold whose firing above it best detects `member` tokens, the threshold a
    fraction of the latent's largest activation on these tokens (as Karvonen et al. 2024 score
    board-game SAE features): (latent, F1, fraction). Fraction 0 is `best_f1`'s rule; a latent
    that fires weakly beside its factor scores higher here."""
    top = codes.max(0)
    n_member = max(float(member.sum()), 1.0)
    best = (0, 0.0, 0.0)
    for fraction in fractions:
        fires = codes > fraction * top
        tp = (fires & member[:, None]).sum(0).astype(np.float64)
        precision = tp / np.maximum(fires.sum(0), 1)
        recall = tp / n_member
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=tp > 0)
        i = int(np.argmax(f1))
        if f1[i] > best[1]:
            best = (i, float(f1[i]), float(fraction))
    return best


def correlations(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(d_sae, n_factors) Pearson correlations of latent activations with factor indicators (0 for a
    constant column)."""
    a = codes - codes.mean(0)
    b = factors - factors.mean(0)
    na, nb = np.sqrt((a * a).sum(0)), np.sqrt((b * b).sum(0))
    c = a.T @ b
    denom = np.outer(na, nb)
    return np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)


def mcc(codes: np.ndarray, factors: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean |correlation| after the one-to-one matching of latents to factors; with each factor's
    matched latent and its correlation."""
    from scipy.optimize import linear_sum_assignment

    corr = np.abs(correlations(codes.astype(np.float64), factors.astype(np.float64)))
    rows, cols = linear_sum_assignment(corr, maximize=True)
    matched = np.full(factors.shape[1], -1)
    matched[cols] = rows
    values = np.zeros(factors.shape[1])
    values[cols] = corr[rows, cols]
    return float(values.mean()), matched, values
