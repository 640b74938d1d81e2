"""The emergence maths on planted values: selectivity against a control task, one linear unit as a
detector, the board sample, and the summary of when factors form."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from workflow.analysis import emergence as em
from workflow.store.tokens import Documents

RNG = np.random.default_rng(0)


def test_selectivity_is_high_for_a_contextual_factor_and_zero_for_identity():
    n, types = 4000, RNG.integers(0, 10, 4000)
    context = RNG.integers(0, 2, n)  # not a function of the type
    x = np.concatenate([np.eye(10)[types], context[:, None] + 0.1 * RNG.normal(size=(n, 1))], 1)
    x += 0.05 * RNG.normal(size=x.shape)
    half = n // 2
    ctx = em.probe_with_control(x[:half], context[:half], types[:half], x[half:], context[half:], types[half:], 0)
    assert ctx["balanced_accuracy"] > 0.95 and ctx["selectivity"] > 0.4
    assert ctx["selectivity"] == pytest.approx(ctx["balanced_accuracy"] - ctx["control_balanced_accuracy"])
    ident = (types >= 5).astype(int)  # decided by the token alone: the control keeps it
    idn = em.probe_with_control(x[:half], ident[:half], types[:half], x[half:], ident[half:], types[half:], 0)
    assert idn["balanced_accuracy"] > 0.95 and abs(idn["selectivity"]) < 0.05


def test_control_labels_are_permuted_within_each_type():
    types = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([1, 0, 0, 1, 1, 0])
    c = em.control_labels(types, labels, 3)
    for t in (0, 1, 2):
        assert sorted(c[types == t]) == sorted(labels[types == t])


def test_a_probe_of_a_single_class_is_nan():
    x = RNG.normal(size=(20, 3))
    assert np.isnan(em.probe(x, np.zeros(20, int), x, np.r_[np.zeros(10, int), np.ones(10, int)])["accuracy"])


def test_one_linear_unit_detects_a_planted_indicator_exactly_and_noise_at_chance():
    n = 3000
    member = RNG.random(n) < 0.2
    x = RNG.normal(size=(n, 8))
    x[:, 3] += 6 * member  # the factor along one direction, six noise widths apart
    f1 = em.detector_f1(x[:1500], member[:1500], x[1500:], member[1500:])
    assert f1 > 0.97
    noise = RNG.random(n) < 0.2
    assert em.detector_f1(x[:1500], noise[:1500], x[1500:], noise[1500:]) < 0.2  # mostly predicts "no"
    assert np.isnan(em.detector_f1(x[:10], np.zeros(10, bool), x, member))


def boards():
    """Four boards of 4 tokens, the first special; root_0 covers token 1 of boards 0, 2; root_1
    token 2 of boards 1, 2; composite_0 token 3 of board 3; board 3's commonest ordinary token is 9."""
    token_id = [[0, 5, 5, 6], [0, 7, 7, 8], [0, 5, 6, 6], [0, 9, 9, 4]]
    concepts = [[[], ["root_0"], [], []], [[], [], ["root_1"], []], [[], ["root_0"], ["root_1"], []]]
    concepts.append([[], [], [], ["composite_0", "background"]])
    table = pl.DataFrame(
        {
            "row": np.arange(16),
            "doc_id": np.repeat(np.arange(4), 4),
            "token_id": np.ravel(token_id),
            "is_special": np.tile([True, False, False, False], 4),
            "concepts": [c for board in concepts for c in board],
            "label": np.repeat([0, 1, 0, 1], 4),
        }
    )
    ids = [np.array(t) for t in token_id]
    docs = Documents(ids, np.array([0, 1, 0, 1]), np.arange(0, 17, 4), [np.array([1, 0, 0, 0], bool)] * 4)
    return table, docs, ["root_0", "root_1", "composite_0", "background"]


def test_the_board_sample_knows_each_tokens_concepts_and_each_boards_factors():
    table, docs, concepts = boards()
    s = em.Sample(table, docs, 10, 100, concepts, 0)  # every board, every ordinary token
    assert s.probe_rows.tolist() == [r for r in range(16) if r % 4]
    assert s.object_rows.tolist() == [1, 6, 9, 10]  # inside some root's footprint
    assert s.member["root_1"].nonzero()[0].tolist() == [6, 10]
    assert s.board_factors["has_root_0"].tolist() == [1, 0, 1, 0]
    assert s.board_factors["has_composite_0"].tolist() == [0, 0, 0, 1] and "has_background" not in s.board_factors
    assert s.background.tolist() == [5, 7, 6, 9]
    acts = np.arange(16, dtype=float)[:, None] * np.array([[1.0, -1.0]])
    np.testing.assert_allclose(s.pooled(acts), [[2, -2], [6, -6], [10, -10], [14, -14]])  # ordinary tokens only
    few = em.Sample(table, docs, 2, 3, concepts, 0)
    assert len(few.labels) == 2 and len(few.probe_rows) == 3 and few.ordinary.sum() == 6


def _table(rows):
    keys = ("step", "layer", "factor", "balanced_accuracy")
    return pl.DataFrame([dict(zip(keys, r)) | {"site": "resid_post", "level": "token"} for r in rows]).with_columns(
        accuracy=pl.col("balanced_accuracy") - 0.01, selectivity=pl.col("balanced_accuracy") - 0.5
    )


def test_a_factor_forms_at_the_first_step_some_layer_decodes_it():
    table = _table(
        [
            (0, 1, "root_0", 0.6), (0, 2, "root_0", 0.7), (10, 1, "root_0", 0.96), (10, 2, "root_0", 0.9),
            (100, 1, "root_0", 0.97), (100, 2, "root_0", 0.99),
            (0, 1, "root_10", 0.5), (10, 1, "root_10", 0.6), (100, 1, "root_10", 0.8), (100, 2, "root_10", 0.7),
            (100, 1, "root_2", 0.95),
        ]
    )  # fmt: skip
    roots = em.factor_table(table, 100, "root_").to_dicts()
    assert [r["factor"] for r in roots] == ["root_0", "root_2", "root_10"]  # by number, not by text
    assert roots[0] | {"best_accuracy": 0} == {
        "factor": "root_0", "best_balanced_accuracy": 0.99, "best_accuracy": 0, "selectivity": pytest.approx(0.49),
        "best_layer": 2, "formed_at": 10,
    }  # fmt: skip
    assert roots[1]["formed_at"] == 100 and roots[2]["formed_at"] is None and roots[2]["best_layer"] == 1
    sae = pl.DataFrame({"sae": ["topk"] * 3, "factor": ["root_0", "root_2", "root_10"]})
    sae = sae.with_columns(f1=pl.Series([0.9, 0.5, 0.85]), threshold_f1=pl.Series([0.95, 0.81, 0.85]))
    result = em.summary(table, sae, [{"sae": "topk", "mcc": 0.5}], 100)
    assert result["roots_decoded_095"] == 2 and result["n_roots"] == 3 and result["snapshots"] == [0, 10, 100]
    assert result["sae_roots"]["topk"] == {
        "min_best_f1": 0.5, "roots_f1_08": 2, "min_threshold_f1": 0.81, "roots_threshold_f1_08": 3, "n_roots": 3,
    }  # fmt: skip
    assert "sae_roots" not in em.summary(table, sae.head(0), [], 100)


def test_best_detectors_and_best_selectivity_pick_the_best_layer():
    rows = [
        {"site": "s", "layer": 1, "factor": "root_0", "detector_f1": 0.6},
        {"site": "s", "layer": 2, "factor": "root_0", "detector_f1": 0.9},
        {"site": "s", "layer": 3, "factor": "root_0", "detector_f1": 0.7},
    ]
    assert em.best_detectors(rows) == {"root_0": {"f1": 0.9, "site": "s", "layer": 2}}
    probes = [
        {"layer": 1, "level": "token", "factor": "root_0", "selectivity": 0.2},
        {"layer": 1, "level": "token", "factor": "root_1", "selectivity": 0.4},
        {"layer": 2, "level": "token", "factor": "root_0", "selectivity": 0.5},
        {"layer": 2, "level": "board", "factor": "root_0", "selectivity": 0.9},
        {"layer": 2, "level": "token", "factor": "background", "selectivity": 0.9},
    ]
    assert em.best_selectivity(probes, [("s", 1), ("s", 2)]) == pytest.approx(0.5)
