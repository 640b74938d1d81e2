"""Sparse kernels of the TopK family, each with a dense reference twin.

A TopK (or BatchTopK) SAE keeps a few latents per token. Two of the dense
training costs only exist because the latents are stored densely:

- decoding: ``scatter(acts) @ W_dec`` multiplies mostly zeros. `sparse_decode`
  sums the selected decoder rows with ``F.embedding_bag`` (the approach of
  sparsify's Triton kernel and its eager twin), forward and backward;
- the encoder's backward: autograd through ``topk(x @ W_enc)`` builds a dense
  (tokens, d_sae) gradient and multiplies it back. `selected_preacts` returns
  only the selected pre-activations and scatters their gradient into the
  selected encoder columns.

`dense_decode` and `dense_selected_preacts` are the plain-autograd twins with
the same signatures; tests check values and gradients agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sparse_decode(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor, n_rows: int
) -> torch.Tensor:
    """sum_{i: rows[i] = r} vals[i] * W_dec[cols[i]] for each r < n_rows -> (n_rows, d_in).

    `rows` must be sorted (token-major), as produced by topk or BatchTopK selection.
    """
    offsets = torch.searchsorted(rows, torch.arange(n_rows, device=rows.device))
    return F.embedding_bag(cols, W_dec, offsets, mode="sum", per_sample_weights=vals.to(W_dec.dtype))


def dense_decode(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, W_dec: torch.Tensor, n_rows: int
) -> torch.Tensor:
    """Reference twin of `sparse_decode`: scatter into (n_rows, d_sae), then matmul."""
    acts = torch.zeros(n_rows, W_dec.shape[0], dtype=W_dec.dtype, device=W_dec.device)
    acts = acts.index_put((rows, cols), vals.to(W_dec.dtype), accumulate=True)
    return acts @ W_dec


class _SelectedPreacts(torch.autograd.Function):
    """pre[rows, cols] of pre = (x - b_dec) @ W_enc + b_enc, with a sparse backward.

    The forward takes the dense pre-activations already computed (without
    autograd) for the selection; the backward touches only selected columns:
    dW_enc[:, c] += g * (x[r] - b_dec), db_enc[c] += g, db_dec -= W_enc @ db_enc.
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, rows, cols, pre):
        ctx.save_for_backward(x, b_dec, W_enc, rows, cols)
        return pre[rows, cols]

    @staticmethod
    def backward(ctx, grad):
        x, b_dec, W_enc, rows, cols = ctx.saved_tensors
        d_in, d_sae = W_enc.shape
        grad = grad.to(W_enc.dtype)
        g_b_enc = torch.zeros(d_sae, dtype=W_enc.dtype, device=W_enc.device).index_add_(0, cols, grad)
        g_W_enc = None
        if ctx.needs_input_grad[2]:
            # dW_enc^T (d_sae, d_in) = sum over selected (r, c) of g * x_in[r] into row c: the
            # weight gradient of an embedding_bag with one bag per token, i.e. the backward
            # kernel of `sparse_decode` (no (selected, d_in) temporary)
            x_in = (x - b_dec).detach().to(W_enc.dtype)
            table = torch.zeros(d_sae, d_in, dtype=W_enc.dtype, device=W_enc.device, requires_grad=True)
            offsets = torch.searchsorted(rows, torch.arange(len(x), device=rows.device))
            with torch.enable_grad():
                out = F.embedding_bag(cols, table, offsets, mode="sum", per_sample_weights=grad)
                (g_table,) = torch.autograd.grad(out, table, grad_outputs=x_in)
            g_W_enc = g_table.t()
        g_b_dec = -(W_enc @ g_b_enc) if ctx.needs_input_grad[1] else None
        return None, g_b_dec, g_W_enc, g_b_enc, None, None, None


def selected_preacts(x, b_dec, W_enc, b_enc, rows, cols, pre):
    """Pre-activations at the selected (row, col) pairs, differentiable in b_dec, W_enc, b_enc."""
    return _SelectedPreacts.apply(x, b_dec, W_enc, b_enc, rows, cols, pre)


def dense_selected_preacts(x, b_dec, W_enc, b_enc, rows, cols, pre):
    """Reference twin of `selected_preacts`: plain autograd through the dense matmul."""
    return ((x - b_dec) @ W_enc + b_enc)[rows, cols]
