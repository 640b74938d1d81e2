import math

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from tests.references import linear_cka
from workflow.analysis.similarity import SimilarityAccumulator


def stream(x, y, sizes=None):
    """Feed x, y (numpy) into an accumulator in uneven batches; return result()."""
    acc = SimilarityAccumulator(x.shape[1], y.shape[1])
    sizes = sizes or [7, 1, 30, 13, 64, 2]
    i, k = 0, 0
    while i < len(x):
        j = i + sizes[k % len(sizes)]
        acc.update(torch.from_numpy(x[i:j]), torch.from_numpy(y[i:j]))
        i, k = j, k + 1
    return acc.result()


def correlated(rng, n=300, dx=24, dy=17):
    x = rng.normal(size=(n, dx)) + 0.5
    y = np.tanh(x @ rng.normal(size=(dx, dy))) + 0.3 * rng.normal(size=(n, dy)) - 2.0
    return x, y


@pytest.mark.parametrize("debiased", [False, True])
def test_identity_orthogonal_scaling(debiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 20)) @ rng.normal(size=(20, 20))
    q = ortho_group.rvs(20, random_state=1)
    assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x @ q, debiased) == pytest.approx(1.0, abs=1e-10)
    y = np.tanh(x) + rng.normal(size=x.shape)
    ref = linear_cka(x, y, debiased)
    assert linear_cka(3.7 * x, 0.01 * y, debiased) == pytest.approx(ref, abs=1e-10)
    key = "cka_debiased" if debiased else "cka_biased"
    assert stream(x, x)[key] == pytest.approx(1.0, abs=1e-10)
    assert stream(x, x @ q)[key] == pytest.approx(1.0, abs=1e-10)
    assert stream(3.7 * x, 0.01 * y)[key] == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_matches_reference(seed):
    x, y = correlated(np.random.default_rng(seed))
    r = stream(x, y)
    assert r["n_tokens"] == len(x)
    assert r["cka_biased"] == pytest.approx(linear_cka(x, y, False), abs=1e-8)
    assert r["cka_debiased"] == pytest.approx(linear_cka(x, y, True), abs=1e-8)
    assert 0.1 < r["cka_debiased"] < r["cka_biased"] < 1.0
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    assert r["norm_ratio"] == pytest.approx(ny.mean() / nx.mean(), rel=1e-12)
    assert math.isnan(r["mean_cosine"]) and math.isnan(r["token_cosine"])  # d_x != d_y


def test_shift_invariance_and_large_offset():
    rng = np.random.default_rng(3)
    x, y = correlated(rng, n=200, dx=16, dy=16)
    ref = {d: linear_cka(x, y, d) for d in (False, True)}
    cx, cy = rng.normal(size=16), rng.normal(size=16)
    for d in (False, True):  # debiased HSIC is shift invariant too (checked on n x n reference)
        assert linear_cka(x + cx, y + cy, d) == pytest.approx(ref[d], abs=1e-9)
    # huge common offset, as in transformer residual streams: accumulator must stay exact
    r = stream(x + 1e4 * cx, y - 1e4 * cy)
    assert r["cka_biased"] == pytest.approx(ref[False], abs=1e-8)
    assert r["cka_debiased"] == pytest.approx(ref[True], abs=1e-8)


def test_independent_gaussians_bias():
    d, seeds = 64, range(5)
    biased, debiased = {}, {}
    for n in (32, 64, 128, 256):
        vals = [stream(*(np.random.default_rng((s, n)).normal(size=(2, n, d)))) for s in seeds]
        biased[n] = np.mean([v["cka_biased"] for v in vals])
        debiased[n] = np.mean([v["cka_debiased"] for v in vals])
        assert abs(debiased[n]) < 0.05, (n, debiased[n])
    print("biased", biased, "debiased", debiased)
    assert biased[32] > 0.1
    assert biased[32] > biased[64] > biased[128] > biased[256]
    assert biased[256] > 0.1  # still far from 0 when d/n = 1/4: the bias is real


def test_cosines():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(150, 12)) + 1.0
    y = x + rng.normal(size=(150, 12))
    x[5] = 0.0  # zero-norm row counts as cosine 0
    r = stream(x, y)
    mx, my = x.mean(0), y.mean(0)
    assert r["mean_cosine"] == pytest.approx(mx @ my / np.linalg.norm(mx) / np.linalg.norm(my), abs=1e-12)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    cos = np.where(nx * ny > 0, (x * y).sum(1) / np.where(nx * ny > 0, nx * ny, 1), 0.0)
    assert cos[5] == 0.0
    assert r["token_cosine"] == pytest.approx(cos.mean(), abs=1e-12)
    r2 = stream(x[6:], -x[6:])
    assert r2["token_cosine"] == pytest.approx(-1.0, abs=1e-12)
    assert r2["mean_cosine"] == pytest.approx(-1.0, abs=1e-12)
    assert r2["norm_ratio"] == pytest.approx(1.0, abs=1e-12)


def test_small_n_and_dtypes():
    rng = np.random.default_rng(5)
    acc = SimilarityAccumulator(8, 8)
    r = acc.result()
    assert r["n_tokens"] == 0 and math.isnan(r["cka_biased"])
    x = rng.normal(size=(3, 8))
    acc.update(torch.from_numpy(x), torch.from_numpy(x))
    r = acc.result()
    assert math.isnan(r["cka_debiased"])  # n < 4: debiased estimator undefined
    assert r["cka_biased"] == pytest.approx(1.0, abs=1e-10)
    assert math.isnan(linear_cka(x, x, True))
    # low-precision inputs are cast to float64 before accumulation
    x32 = torch.randn(50, 8, dtype=torch.float32)
    acc = SimilarityAccumulator(8, 8)
    acc.update(x32.to(torch.bfloat16), x32.to(torch.bfloat16))
    assert acc.result()["cka_debiased"] == pytest.approx(1.0, abs=1e-10)
    with pytest.raises(ValueError):
        acc.update(torch.zeros(2, 8), torch.zeros(3, 8))
