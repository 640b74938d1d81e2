"""Sparse kernels of the TopK family agree with their dense twins, values and gradients."""

from __future__ import annotations

import pytest
import torch

from workflow.sae import kernels


def _problem(seed=0, n=64, d_in=24, d_sae=200, k=7):
    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_in, d_sae, generator=g, dtype=torch.float64)
    b_enc = torch.randn(d_sae, generator=g, dtype=torch.float64)
    W_dec = torch.randn(d_sae, d_in, generator=g, dtype=torch.float64)
    b_dec = torch.randn(d_in, generator=g, dtype=torch.float64)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    return x, W_enc, b_enc, W_dec, b_dec, k


def _run(preacts, decode, x, W_enc, b_enc, W_dec, b_dec, k, batch_top: bool):
    params = [p.clone().requires_grad_(True) for p in (W_enc, b_enc, W_dec, b_dec)]
    W_enc, b_enc, W_dec, b_dec = params
    with torch.no_grad():
        pre = (x - b_dec) @ W_enc + b_enc
    if batch_top:  # variable latents per row, as BatchTopK
        flat = pre.relu().flatten().topk(k * len(x)).indices.sort().values
        rows, cols = flat // pre.shape[1], flat % pre.shape[1]
    else:
        idx = pre.topk(k, dim=-1).indices
        rows, cols = torch.arange(len(x)).repeat_interleave(k), idx.flatten()
    vals = preacts(x, b_dec, W_enc, b_enc, rows, cols, pre).relu()
    out = decode(rows, cols, vals, W_dec, len(x)) + b_dec
    loss = (out - x).pow(2).sum() + out.sin().sum()  # a non-trivial upstream gradient
    loss.backward()
    return out.detach(), [p.grad for p in params]


@pytest.mark.parametrize("batch_top", [False, True])
def test_sparse_kernels_match_dense_twins_in_values_and_gradients(batch_top):
    problem = _problem()
    out_s, grads_s = _run(kernels.selected_preacts, kernels.sparse_decode, *problem, batch_top)
    out_d, grads_d = _run(kernels.dense_selected_preacts, kernels.dense_decode, *problem, batch_top)
    torch.testing.assert_close(out_s, out_d, rtol=1e-10, atol=1e-10)
    for name, gs, gd in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads_s, grads_d):
        assert gs is not None and gd is not None, name
        torch.testing.assert_close(gs, gd, rtol=1e-9, atol=1e-9, msg=name)
        assert gs.abs().sum() > 0, name


def test_sparse_decode_handles_rows_without_latents():
    W_dec = torch.randn(10, 4, dtype=torch.float64)
    rows, cols = torch.tensor([0, 0, 2]), torch.tensor([1, 3, 9])
    vals = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    out = kernels.sparse_decode(rows, cols, vals, W_dec, 4)
    torch.testing.assert_close(out, kernels.dense_decode(rows, cols, vals, W_dec, 4))
    assert out[1].abs().sum() == 0 and out[3].abs().sum() == 0
