"""`workflow.report.figures.similarity`: one line per similarity measure, the y axis from below the lowest."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workflow.report.figures import similarity

TABLE = pl.DataFrame(
    {
        "layer": [0, 1, 2],
        "mean_cosine": [1.0, 0.9, 0.8],
        "token_cosine": [1.0, 0.7, 0.6],
        "cka_debiased": [1.0, 0.5, -0.25],
        "cka_biased": [1.0, 0.6, float("nan")],
    }
)


@pytest.fixture
def drawn(monkeypatch):
    """The figure `plot` hands to `save`, kept open to read back."""
    kept = {}
    monkeypatch.setattr(similarity, "save", lambda fig, path: kept.update(fig=fig, path=path))
    return kept


def test_each_measure_is_a_line_over_the_layers(drawn):
    similarity.plot(TABLE, "a title", "out.png")
    (ax,) = drawn["fig"].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == [label for label, _, _ in similarity.STYLES.values()]
    np.testing.assert_array_equal(lines["linear CKA (debiased)"].get_ydata(), [1.0, 0.5, -0.25])
    assert lines["linear CKA (biased)"].get_linestyle() == "--"
    assert list(ax.get_xticks()) == [0, 1, 2] and ax.get_title() == "a title" and drawn["path"] == "out.png"
    assert ax.get_ylim() == pytest.approx((-0.27, 1.02))  # the lowest value (NaN ignored) less 0.02


def test_the_y_axis_starts_at_zero_when_every_value_is_positive(drawn):
    similarity.plot(TABLE.with_columns(pl.col("cka_debiased").abs()), "", "out.png")
    assert drawn["fig"].axes[0].get_ylim() == pytest.approx((-0.02, 1.02))


def test_the_figure_is_written_as_a_png(tmp_path):
    from PIL import Image

    similarity.plot(TABLE, "t", str(tmp_path / "s.png"))
    with Image.open(tmp_path / "s.png") as png:
        assert png.format == "PNG" and png.size == (768, 480)  # 6.4 x 4.0 inches at 120 dpi
