"""Stage `lm_compare`'s plot: the distribution of per-token KL between the two variants' predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.report.figures.canvas import pyplot, save


def kl_plot(kl: np.ndarray, title: str, path: Path) -> None:
    """Histogram of `kl` (nats per token) on 50 log-spaced bins, zeros clipped into the first bin
    (whose edge is the smallest positive KL, at least 1e-6); the mean as a dashed line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    positive = kl[kl > 0]
    low = max(float(positive.min()) if len(positive) else 1e-6, 1e-6)
    bins = np.logspace(np.log10(low), np.log10(max(float(kl.max()), low * 10)), 50)
    ax.hist(np.clip(kl, low, None), bins=bins, color="#4c72b0")
    ax.set_xscale("log")
    ax.set_xlabel("KL(fine-tuned || pretrained) per token (nats)")
    ax.set_ylabel("tokens")
    ax.axvline(float(kl.mean()), color="k", linestyle="--", linewidth=1, label=f"mean {kl.mean():.3g}")
    ax.legend()
    ax.set_title(title)
    save(fig, path)
