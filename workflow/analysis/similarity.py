"""Streaming similarity statistics between two representations of the same tokens.

X (n, d_x): pretrained-model activations; Y (n, d_y): fine-tuned-model activations,
row i of both being the same token. Rows arrive in batches; nothing of size n x n
(or n x d) is ever held. Everything is accumulated in float64 torch tensors.

Statistics returned by ``SimilarityAccumulator.result()``:

* ``mean_cosine``  = cos(mean_i x_i, mean_i y_i)   (the earlier study's measure;
  NaN if d_x != d_y or either mean is the zero vector).
* ``token_cosine`` = (1/n) sum_i cos(x_i, y_i)      (NaN if d_x != d_y; a row pair
  in which either row has zero norm contributes cosine 0).
* ``norm_ratio``   = mean_i ||y_i|| / mean_i ||x_i||.
* ``cka_biased``   linear CKA, biased HSIC (Kornblith et al. 2019, ICML,
  "Similarity of Neural Network Representations Revisited", eq. for linear CKA):
      ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),  Xc = column-centred X,
  with Xc^T Yc = X^T Y - S_x S_y^T / n  (S_x = sum_i x_i).
* ``cka_debiased`` linear CKA with the unbiased HSIC estimator of Song et al. 2012
  (JMLR, "Feature Selection via Dependence Maximization", eq. 5), as used by
  Nguyen, Raghu & Kornblith 2021 ("Do Wide and Deep Networks Learn the Same Things?"):
  K = X X^T, L = Y Y^T with zeroed diagonals (K~, L~),
      HSIC_u(K,L) = [tr(K~L~) + (1'K~1)(1'L~1)/((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)),
      CKA_u = HSIC_u(K,L) / sqrt(HSIC_u(K,K) HSIC_u(L,L)).
  Computed exactly in feature space, with a_i = ||x_i||^2, b_i = ||y_i||^2:
      tr(K~L~)  = ||X^T Y||_F^2 - sum a_i b_i
      1'K~1     = ||S_x||^2 - sum a_i
      1'K~L~1   = S_x^T (X^T Y) S_y - (sum a_i y_i).S_y - (sum b_i x_i).S_x + sum a_i b_i
      1'K~K~1   = S_x^T (X^T X) S_x - 2 (sum a_i x_i).S_x + sum a_i^2   (same for L).
  Undefined (NaN) for n < 4; also NaN if HSIC_u(K,K) HSIC_u(L,L) <= 0, which the
  unbiased estimator can produce for tiny n or degenerate data.

The full n x n reference is ``tests/references.py``'s `linear_cka`.

Numerical stability: both CKA estimators are exactly invariant to adding a constant
vector to every row of X (or of Y) -- for the debiased one because HSIC_u is invariant
to kernel changes k(x,x') -> k(x,x') + f(x) + f(x') (checked numerically in the tests).
So the CKA sums are accumulated on X - mu_x, Y - mu_y, where mu is the mean of the
first batch; this removes the large common offset of transformer hidden states that
would otherwise cause catastrophic cancellation. The cosine / norm statistics use raw rows.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SimilarityAccumulator"]


def _fro2(m: torch.Tensor) -> float:
    return float((m * m).sum())


class SimilarityAccumulator:
    """Accumulates the sums needed for the statistics above, batch by batch."""

    def __init__(self, d_x: int, d_y: int, device="cpu"):
        self.d_x, self.d_y, self.device = int(d_x), int(d_y), torch.device(device)
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=self.device)  # noqa: E731
        self.n = 0
        self.mu_x = self.mu_y = None  # (d_x,), (d_y,) shift = first-batch mean
        self.xtx, self.yty, self.xty = z(d_x, d_x), z(d_y, d_y), z(d_x, d_y)  # shifted
        self.sx, self.sy = z(d_x), z(d_y)  # shifted column sums S_x, S_y
        self.ax, self.ay, self.bx, self.by = z(d_x), z(d_y), z(d_x), z(d_y)  # sum a_i x_i, a_i y_i, b_i x_i, b_i y_i
        self.sa = self.sb = self.saa = self.sbb = self.sab = 0.0  # sum a, b, a^2, b^2, a*b
        self.raw_sx, self.raw_sy = z(d_x), z(d_y)  # unshifted sums for mean_cosine
        self.cos_sum = self.nx_sum = self.ny_sum = 0.0

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = torch.as_tensor(x).to(device=self.device, dtype=torch.float64)  # (B, d_x)
        y = torch.as_tensor(y).to(device=self.device, dtype=torch.float64)  # (B, d_y)
        if x.ndim != 2 or y.ndim != 2 or x.shape[1] != self.d_x or y.shape[1] != self.d_y:
            raise ValueError(f"expected (B,{self.d_x}) and (B,{self.d_y}), got {tuple(x.shape)}, {tuple(y.shape)}")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"row counts differ: {x.shape[0]} vs {y.shape[0]}")
        if x.shape[0] == 0:
            return
        self.n += x.shape[0]
        # raw statistics
        self.raw_sx += x.sum(0)
        self.raw_sy += y.sum(0)
        nx, ny = x.norm(dim=1), y.norm(dim=1)  # (B,)
        self.nx_sum += float(nx.sum())
        self.ny_sum += float(ny.sum())
        if self.d_x == self.d_y:
            den = nx * ny
            cos = torch.where(den > 0, (x * y).sum(1) / torch.where(den > 0, den, 1.0), 0.0)
            self.cos_sum += float(cos.sum())
        # shifted statistics for CKA
        if self.mu_x is None:
            self.mu_x, self.mu_y = x.mean(0), y.mean(0)
        x, y = x - self.mu_x, y - self.mu_y
        a, b = (x * x).sum(1), (y * y).sum(1)  # (B,)
        self.xtx += x.T @ x
        self.yty += y.T @ y
        self.xty += x.T @ y
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.ax += a @ x
        self.ay += a @ y
        self.bx += b @ x
        self.by += b @ y
        self.sa += float(a.sum())
        self.sb += float(b.sum())
        self.saa += float((a * a).sum())
        self.sbb += float((b * b).sum())
        self.sab += float((a * b).sum())

    def _cka_biased(self) -> float:
        n = self.n
        cxy = self.xty - torch.outer(self.sx, self.sy) / n  # Xc^T Yc (d_x, d_y)
        cxx = self.xtx - torch.outer(self.sx, self.sx) / n  # (d_x, d_x)
        cyy = self.yty - torch.outer(self.sy, self.sy) / n  # (d_y, d_y)
        den = math.sqrt(_fro2(cxx)) * math.sqrt(_fro2(cyy))
        return _fro2(cxy) / den if den > 0 else math.nan

    def _cka_debiased(self) -> float:
        n = self.n
        if n < 4:
            return math.nan
        sx, sy = self.sx, self.sy

        def hsic(tr, ok, ol, okl):  # tr(K~L~), 1'K~1, 1'L~1, 1'K~L~1
            return (tr + ok * ol / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * okl) / (n * (n - 3))

        ok = float(sx @ sx) - self.sa
        ol = float(sy @ sy) - self.sb
        h_xy = hsic(
            _fro2(self.xty) - self.sab,
            ok,
            ol,
            float(sx @ self.xty @ sy) - float(self.ay @ sy) - float(self.bx @ sx) + self.sab,
        )
        h_xx = hsic(_fro2(self.xtx) - self.saa, ok, ok, float(sx @ self.xtx @ sx) - 2 * float(self.ax @ sx) + self.saa)
        h_yy = hsic(_fro2(self.yty) - self.sbb, ol, ol, float(sy @ self.yty @ sy) - 2 * float(self.by @ sy) + self.sbb)
        prod = h_xx * h_yy
        return h_xy / math.sqrt(prod) if prod > 0 else math.nan

    def result(self) -> dict[str, float]:
        n, nan = self.n, math.nan
        out = {
            "n_tokens": float(n),
            "mean_cosine": nan,
            "token_cosine": nan,
            "cka_biased": nan,
            "cka_debiased": nan,
            "norm_ratio": nan,
        }
        if n == 0:
            return out
        if self.d_x == self.d_y:
            den = float(self.raw_sx.norm() * self.raw_sy.norm())
            out["mean_cosine"] = float(self.raw_sx @ self.raw_sy) / den if den > 0 else nan
            out["token_cosine"] = self.cos_sum / n
        out["norm_ratio"] = self.ny_sum / self.nx_sum if self.nx_sum > 0 else nan
        out["cka_biased"] = self._cka_biased()
        out["cka_debiased"] = self._cka_debiased()
        return out
