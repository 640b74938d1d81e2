"""Matplotlib without a display, and saving a figure atomically (every stage's plots)."""

from __future__ import annotations

from pathlib import Path

from workflow.store.files import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display: jobs run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int | None = None, tight: bool = True) -> None:
    """Lay out, write as PNG under a temporary name, rename into place, close."""
    plt = pyplot()
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
