"""Boards with known abstractions: the generator's boards, labels, split and declared changes."""

from __future__ import annotations

import numpy as np
import pytest

from workflow.datasets import abstractions as A
from workflow.datasets import boards, sources

P = dict(A.DEFAULTS)


def cells(doc: dict) -> tuple[list[str], list[set[str]]]:
    """A document's tokens and each cell's concepts, read back from its text and spans."""
    tokens = doc["text"].split(" ")
    starts, at = {}, 0
    for i, t in enumerate(tokens):
        starts[at] = i
        at += len(t) + 1
    concepts = [set() for _ in tokens]
    for s in doc["spans"]:
        i = starts[s["start"]]
        assert s["end"] == s["start"] + len(tokens[i])  # a span covers exactly one cell
        concepts[i].add(s["concept"])
    return tokens, concepts


def grid(doc, p=P):
    tokens, concepts = cells(doc)
    n = p["board_dim"]
    assert len(tokens) == n * n
    return np.array(tokens).reshape(n, n), np.array(concepts, dtype=object).reshape(n, n)


def single_placement(doc, p=P) -> tuple[int, tuple[int, int], str]:
    """(root, top-left corner, background) of a single-root board."""
    tokens, concepts = grid(doc, p)
    where = [(i, j) for (i, j), c in np.ndenumerate(concepts) if any(x.startswith("root_") for x in c)]
    (root,) = {x for i, j in where for x in concepts[i, j] if x.startswith("root_")}
    background = next(
        t for (i, j), t in np.ndenumerate(tokens) if "background" in concepts[i, j] and (i, j) not in where
    )
    return int(root[5:]), min(where), background


def test_every_cell_shows_its_roots_tokens_and_every_concept_is_a_span():
    a = A.make(P, 0)
    train, _ = A.generate(P, None, 300, 30, 0)
    kinds = {d["label"] for d in train}
    assert kinds == {0, 1, 2}
    for doc in train:
        tokens, concepts = grid(doc)
        for (i, j), names in np.ndenumerate(concepts):
            assert ("background" in names) == tokens[i, j].startswith("b")
            assert all(n in A.concept_names(P, None) for n in names)
        if doc["label"] == 0:  # one root: its footprint holds exactly that root's tokens
            root, (top, left), _ = single_placement(doc)
            d = P["abs_dim"]
            shown = tokens[top : top + d, left : left + d]
            expected = np.vectorize(A.obj)(a.roots[root][..., 0])
            assert (shown == expected).all()
        if doc["label"] == 2:
            comps = {x for c in concepts.ravel() for x in c if x.startswith("composite_")}
            assert len(comps) == 1


def test_the_balanced_split_holds_out_placements_the_train_split_never_shows():
    train, test = A.generate(P, None, 3000, 300, 0)
    seen = {single_placement(d) for d in train if d["label"] == 0}
    held = {single_placement(d) for d in test if d["label"] == 0}
    assert held and not (seen & held)
    per_root = {}
    for root, *_ in held:
        per_root[root] = per_root.get(root, 0) + 1
    assert len({r for r, *_ in held}) == P["abs_n"]  # every root has held-out placements in test
    assert all(len({h for h in held if h[0] == r}) <= P["card_test"] for r in per_root)


def test_the_same_seed_gives_the_same_boards_and_another_seed_other_ones():
    assert A.generate(P, None, 50, 10, 3) == A.generate(P, None, 50, 10, 3)
    assert A.generate(P, None, 50, 10, 3)[0] != A.generate(P, None, 50, 10, 4)[0]


def test_fuzzy_cells_draw_one_of_their_modes_and_say_which():
    p = {**P, "abs_w_c": 2, "abs_w_m": 3}
    a = A.make(p, 0)
    assert a.fuzzy.sum(axis=(1, 2)).tolist() == [2] * p["abs_n"]
    train, _ = A.generate(p, None, 400, 10, 0)
    modes = set()
    for doc in (d for d in train if d["label"] == 0):
        tokens, concepts = grid(doc, p)
        root, (top, left), _ = single_placement(doc, p)
        for (i, j), is_fuzzy in np.ndenumerate(a.fuzzy[root]):
            names = concepts[top + i, left + j]
            fuzzy = [n for n in names if n.startswith("fuzzy_")]
            assert bool(fuzzy) == bool(is_fuzzy)
            if fuzzy:
                m = int(fuzzy[0][6:])
                modes.add(m)
                assert tokens[top + i, left + j] == A.obj(a.roots[root][i, j, m])
    assert modes == {0, 1, 2}


def test_a_declared_change_changes_removes_and_adds_exactly_the_roots_it_names():
    change = {**A.CHANGE_DEFAULTS, "changed": [0, 1], "removed": [2], "new": 2, "redefined": [0]}
    base, after = A.make(P, 0), A.changed(A.make(P, 0), P, change, 0)
    for r in range(P["abs_n"]):
        differ = int((base.roots[r] != after.roots[r]).any(axis=-1).sum())
        assert differ == (1 if r in (0, 1) else 0)
    assert len(after.roots) == P["abs_n"] + 2
    assert not (after.composites[0] == base.composites[0]).all() and (after.composites[1:] == base.composites[1:]).all()
    train, test = A.generate(P, change, 1500, 400, 0)
    shown = lambda docs: {x for d in docs for s in d["spans"] for x in [s["concept"]] if x.startswith("root_")}  # noqa: E731
    tuned = [d for d in train if d["finetune"]]
    assert len(tuned) == 1500 and len(train) == 3000  # original_boards: as many original boards (analysis only)
    assert "root_2" not in shown(tuned)  # removed: never in the changed corpus the fine-tune sees
    assert {"root_10", "root_11"} <= shown(tuned)
    assert "root_2" in shown(train) and not {"root_10", "root_11"} & shown([d for d in train if not d["finetune"]])
    assert "root_2" in shown(test)  # ... but in the mixed test split, where the diff looks for it
    assert A.truth(P, change) == {
        **{f"root_{r}": "retained" for r in range(3, 10)},
        "root_0": "drifted",
        "root_1": "drifted",
        "root_2": "overwritten",
        "root_10": "new",
        "root_11": "new",
    }
    meta = A.describe(P, change, 0)
    assert meta["truth"] == A.truth(P, change) and len(meta["roots"]) == 12


@pytest.mark.parametrize(
    "board, change, key",
    [
        ({"abs_dim": 9}, None, "board.abs_dim"),
        ({"abs_c": 10}, None, "board.abs_c"),
        ({"abs_w_c": 10}, None, "board.abs_w_c"),
        ({"comp_c": 5}, None, "board.comp_c"),
        ({"comp_dim": 3}, None, "board.comp_dim"),
        ({"board_types_proba": [0.5, 0.5]}, None, "board.board_types_proba"),
        ({"card_test": 360}, None, "board.card_test"),
        ({}, {"changed": [10]}, "change.changed"),
        ({}, {"changed": [1], "removed": [1]}, "change: roots [1] are both changed and removed"),
    ],
)
def test_bad_parameters_name_their_key(board, change, key):
    spec = {"source": "abstractions", "board": board, "change": change}
    problems = boards.check_spec(spec, "datasets.b")
    assert any(key in p for p in problems), problems


def test_the_source_gives_tables_with_board_type_labels_and_concepts():
    spec = {
        "source": "abstractions",
        "n_train": 60,
        "n_test": 12,
        "seed": 0,
        "board": {"board_types": ["single", "composite"], "board_types_proba": [0.5, 0.5]},
    }
    train, test, names = boards.load(spec)
    assert names == ["single", "composite"] and set(train["label"]) == {0, 1}
    assert len(train) == 60 and len(test) == 12
    assert sources.concepts(spec) == [f"root_{r}" for r in range(10)] + [f"composite_{c}" for c in range(5)] + [
        "background"
    ]
