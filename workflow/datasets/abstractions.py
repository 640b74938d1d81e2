"""Boards with known abstractions, after Ferry, Ching and Kawai (2023), "Emergence and Function of
Abstract Representations in Self-Supervised Transformers" (their generator's parameters and defaults).

A board is a ``board_dim x board_dim`` grid filled with one background token (one of
``vocab_bck``). On it lie objects made of object tokens (``vocab_token`` of them):

* **Root abstractions** (``abs_n``): a fixed arrangement of ``abs_c`` object tokens on an
  ``abs_dim x abs_dim`` footprint (the other cells show the background). ``abs_w_c`` of those cells
  may be *fuzzy*: each board draws one of ``abs_w_m`` tokens (modes) for them.
* **Composite abstractions** (``comp_n``): ``comp_c`` roots (drawn with replacement) arranged on a
  ``comp_dim x comp_dim`` grid of root footprints, ``comp_margin`` cells apart.
* **Board types**: one root (``single``), two roots (``double``; the second is drawn over the first
  where they overlap, and their positions differ in row and column), or one composite
  (``composite``), mixed by ``board_types_proba``.

The split is the seed study's "balanced" one: for every root, every ordered pair of roots and
every composite, ``card_test`` of its placements (position(s) and background token) are held out for
the test split, and the train split draws from the others. So the test split holds placements the
model never saw.

A board is written as a document: its tokens (``b3`` background, ``o7`` object) in reading order,
separated by spaces. Every cell is a character span carrying its planted concepts, as the built-in
datasets record theirs: ``root_<r>`` (the footprint of root r covers the cell), ``composite_<c>``
(it lies in composite c's footprint of roots), ``background`` (it shows a background token) and
``fuzzy_<m>`` (a fuzzy cell showing its mode m). The document's label is its board type.

A **declared change** (``change``) makes a second corpus from the same roots and composites, for a
fine-tune whose effect is known: roots ``kept`` as they are, ``changed`` (one footprint cell's token
replaced), ``removed`` (on no board of the changed corpus), ``new`` roots added, and composites
``redefined`` (a new arrangement). Its train split holds ``n_train`` boards of the changed corpus,
the only ones the fine-tune trains on (``finetune`` true), and ``original_boards`` boards of the
original corpus (``finetune`` false, by default as many), so that the SAEs, crosscoders and probes
of both variants train on boards of both corpora, as diffing studies train on a mix of the base
and the fine-tuning data; its test split mixes held-out boards of the original corpus and of the changed one, so every
root, removed ones too, can be looked for in both variants. The truth per root (retained, drifted,
overwritten or new, in the diff's terms) is in ``truth``.

Randomness comes only from numpy generators seeded from ``seed``: the roots and composites from
one stream, the split from a second, the boards of each split from their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOARD_TYPES = ("single", "double", "composite")
DEFAULTS = {
    "board_dim": 8,
    "vocab_bck": 10,
    "vocab_token": 10,
    "abs_n": 10,
    "abs_dim": 3,
    "abs_c": 9,
    "abs_w_c": 0,
    "abs_w_m": 1,
    "comp_n": 5,
    "comp_dim": 2,
    "comp_margin": 1,
    "comp_c": 4,
    "board_types": list(BOARD_TYPES),
    "board_types_proba": [1 / 3, 1 / 3, 1 / 3],
    "card_test": 4,
}
CHANGE_DEFAULTS = {"changed": [], "removed": [], "new": 0, "redefined": [], "original_boards": None}
# what each declared change should look like in the diff (`workflow.analysis.matching` categories)
TRUTH = {"kept": "retained", "changed": "drifted", "removed": "overwritten", "new": "new"}


def background(i: int) -> str:
    return f"b{i}"


def obj(i: int) -> str:
    return f"o{i}"


def vocabulary(board: dict) -> list[str]:
    """Every token a board of these parameters can show: backgrounds, then objects."""
    return [background(i) for i in range(board["vocab_bck"])] + [obj(i) for i in range(board["vocab_token"])]


def composite_width(p: dict) -> int:
    return p["comp_dim"] * p["abs_dim"] + (p["comp_dim"] - 1) * p["comp_margin"]


def placements(p: dict, kind: str) -> int:
    """Placements (position(s) x background) of one root, one ordered pair of roots, or one composite."""
    n = p["board_dim"] - p["abs_dim"] + 1
    if kind == "single":
        return n * n * p["vocab_bck"]
    if kind == "double":
        return (n * (n - 1)) ** 2 * p["vocab_bck"]
    m = p["board_dim"] - composite_width(p) + 1
    return m * m * p["vocab_bck"]


@dataclass
class Abstractions:
    """Roots as (n, abs_dim, abs_dim, abs_w_m) object-token ids (-1: no object; fuzzy cells have a
    token per mode, fixed cells repeat theirs), composites as (n, comp_dim, comp_dim) root ids (-1: none)."""

    roots: np.ndarray
    fuzzy: np.ndarray  # (n, abs_dim, abs_dim) bool
    composites: np.ndarray


def _root(rng: np.random.Generator, p: dict) -> tuple[np.ndarray, np.ndarray]:
    cells = p["abs_dim"] ** 2
    chosen = rng.choice(cells, p["abs_c"], replace=False)
    fuzzy_cells = rng.choice(chosen, p["abs_w_c"], replace=False) if p["abs_w_c"] else np.array([], int)
    tokens = np.full((cells, p["abs_w_m"]), -1)
    fuzzy = np.zeros(cells, bool)
    for c in chosen:
        if c in fuzzy_cells:
            tokens[c] = rng.choice(p["vocab_token"], p["abs_w_m"], replace=False)
            fuzzy[c] = True
        else:
            tokens[c] = rng.integers(p["vocab_token"])
    d = p["abs_dim"]
    return tokens.reshape(d, d, -1), fuzzy.reshape(d, d)


def _roots(rng: np.random.Generator, p: dict, n: int, existing: list[np.ndarray]) -> tuple[list, list]:
    roots, fuzzy = [], []
    while len(roots) < n:
        tokens, f = _root(rng, p)
        if any(np.array_equal(tokens, r) for r in existing + roots):
            continue  # every root distinct, as in the seed study
        roots.append(tokens)
        fuzzy.append(f)
    return roots, fuzzy


def _composite(rng: np.random.Generator, p: dict, n_roots: int) -> np.ndarray:
    places = rng.choice(p["comp_dim"] ** 2, p["comp_c"], replace=False)
    comp = np.full(p["comp_dim"] ** 2, -1)
    comp[places] = rng.integers(n_roots, size=p["comp_c"])
    return comp.reshape(p["comp_dim"], p["comp_dim"])


def make(p: dict, seed: int) -> Abstractions:
    """The roots and composites of these parameters and seed."""
    rng = np.random.default_rng([seed, 0])
    roots, fuzzy = _roots(rng, p, p["abs_n"], [])
    composites = []
    while len(composites) < p["comp_n"]:
        c = _composite(rng, p, p["abs_n"])
        if not any(np.array_equal(c, o) for o in composites):
            composites.append(c)
    return Abstractions(np.stack(roots), np.stack(fuzzy), np.stack(composites))


def changed(base: Abstractions, p: dict, change: dict, seed: int) -> Abstractions:
    """The abstractions after a declared change (removed roots are kept here, and left off boards)."""
    rng = np.random.default_rng([seed, 1])
    roots, fuzzy = base.roots.copy(), base.fuzzy.copy()
    for r in sorted(change["changed"]):
        fixed = np.argwhere((roots[r][..., 0] >= 0) & ~fuzzy[r])
        i, j = fixed[rng.integers(len(fixed))]
        old = roots[r][i, j, 0]
        roots[r][i, j, :] = rng.choice([t for t in range(p["vocab_token"]) if t != old])
    new_roots, new_fuzzy = _roots(rng, p, change["new"], list(roots))
    if new_roots:
        roots = np.concatenate([roots, np.stack(new_roots)])
        fuzzy = np.concatenate([fuzzy, np.stack(new_fuzzy)])
    composites = base.composites.copy()
    for c in sorted(change["redefined"]):
        while True:
            new = _composite(rng, p, p["abs_n"])
            if not np.array_equal(new, composites[c]):
                composites[c] = new
                break
    return Abstractions(roots, fuzzy, composites)


def truth(p: dict, change: dict) -> dict[str, str]:
    """root_<r> -> what the change did to it, in the diff's categories."""
    out = {}
    for r in range(p["abs_n"]):
        kind = "changed" if r in change["changed"] else "removed" if r in change["removed"] else "kept"
        out[f"root_{r}"] = TRUTH[kind]
    for r in range(p["abs_n"], p["abs_n"] + change["new"]):
        out[f"root_{r}"] = TRUTH["new"]
    return out


class _Placements:
    """The balanced split of one abstraction's placements: `card_test` held out, the rest train."""

    def __init__(self, count: int, card_test: int, rng: np.random.Generator):
        self.count = count
        self.test = rng.choice(count, card_test, replace=False) if card_test else np.array([], int)
        self.held = set(self.test.tolist())

    def draw(self, rng: np.random.Generator, split: str) -> int:
        if split == "test":
            return int(self.test[rng.integers(len(self.test))])
        while True:
            i = int(rng.integers(self.count))
            if i not in self.held:
                return i


class Generator:
    """Boards of one corpus: `abstractions`, the roots allowed on boards, and the balanced split."""

    def __init__(self, p: dict, abstractions: Abstractions, seed: int, allowed: list[int]):
        self.p, self.a, self.allowed = p, abstractions, allowed
        n = p["board_dim"] - p["abs_dim"] + 1
        self.positions = [(i, j) for i in range(n) for j in range(n)]
        self.pairs = [(a, b) for a in self.positions for b in self.positions if a[0] != b[0] and a[1] != b[1]]
        m = p["board_dim"] - composite_width(p) + 1
        self.comp_positions = [(i, j) for i in range(m) for j in range(m)]
        # composites made only of allowed roots
        self.comps = [c for c in range(len(abstractions.composites)) if set(self._comp_roots(c)) <= set(allowed)]
        rng = np.random.default_rng([seed, 2])
        k, nb = p["card_test"], p["vocab_bck"]
        n_roots = len(abstractions.roots)
        self.split = {
            "single": {r: _Placements(len(self.positions) * nb, k, rng) for r in range(n_roots)},
            "double": {
                (a, b): _Placements(len(self.pairs) * nb, k, rng) for a in range(n_roots) for b in range(n_roots)
            }
            if "double" in p["board_types"]
            else {},
            "composite": {
                c: _Placements(len(self.comp_positions) * nb, k, rng) for c in range(len(abstractions.composites))
            },
        }

    def _comp_roots(self, c: int) -> list[int]:
        return [int(r) for r in self.a.composites[c].ravel() if r >= 0]

    def types(self) -> tuple[list[str], np.ndarray]:
        kinds = [
            (k, q) for k, q in zip(self.p["board_types"], self.p["board_types_proba"]) if k != "composite" or self.comps
        ]
        proba = np.array([q for _, q in kinds], float)
        return [k for k, _ in kinds], proba / proba.sum()

    def _place_root(self, board, concepts, fuzzy_modes, r: int, top: int, left: int, rng, extra=()):
        d = self.p["abs_dim"]
        for i in range(d):
            for j in range(d):
                cell = (top + i) * self.p["board_dim"] + left + j
                concepts[cell] = [f"root_{r}", *extra]
                fuzzy_modes[cell] = -1
                modes = self.a.roots[r][i, j]
                if modes[0] < 0:
                    continue  # no object here: the background shows (set after placing)
                m = int(rng.integers(len(modes))) if self.a.fuzzy[r][i, j] else 0
                board[cell] = self.p["vocab_bck"] + int(modes[m])
                if self.a.fuzzy[r][i, j]:
                    fuzzy_modes[cell] = m

    def board(self, rng: np.random.Generator, split: str, kind: str) -> tuple[list[str], list[list[str]]]:
        """One board of `kind`: its tokens in reading order and each cell's concepts."""
        p, nb = self.p, self.p["vocab_bck"]
        cells = p["board_dim"] ** 2
        board = np.full(cells, -1)
        concepts: list[list[str]] = [[] for _ in range(cells)]
        fuzzy_modes = np.full(cells, -1)
        if kind == "single":
            r = int(rng.choice(self.allowed))
            i = self.split["single"][r].draw(rng, split)
            (top, left), bck = self.positions[i // nb], i % nb
            self._place_root(board, concepts, fuzzy_modes, r, top, left, rng)
        elif kind == "double":
            a, b = (int(x) for x in rng.choice(self.allowed, 2))
            i = self.split["double"][(a, b)].draw(rng, split)
            (pa, pb), bck = self.pairs[i // nb], i % nb
            self._place_root(board, concepts, fuzzy_modes, a, *pa, rng)
            self._place_root(board, concepts, fuzzy_modes, b, *pb, rng)
        else:
            c = int(rng.choice(self.comps))
            i = self.split["composite"][c].draw(rng, split)
            (top, left), bck = self.comp_positions[i // nb], i % nb
            step = p["abs_dim"] + p["comp_margin"]
            for (gi, gj), r in np.ndenumerate(self.a.composites[c]):
                if r >= 0:
                    self._place_root(
                        board,
                        concepts,
                        fuzzy_modes,
                        int(r),
                        top + gi * step,
                        left + gj * step,
                        rng,
                        (f"composite_{c}",),
                    )
        shown = np.where(board < 0, bck, board)
        tokens = [background(t) if t < nb else obj(t - nb) for t in shown]
        for cell in range(cells):
            if shown[cell] < nb:
                concepts[cell].append("background")
            if fuzzy_modes[cell] >= 0:
                concepts[cell].append(f"fuzzy_{fuzzy_modes[cell]}")
        return tokens, concepts

    def documents(self, n: int, split: str, seed: int, stream: int) -> list[dict]:
        rng = np.random.default_rng([seed, 3, stream])
        kinds, proba = self.types()
        rows = []
        for _ in range(n):
            kind = kinds[int(rng.choice(len(kinds), p=proba))]
            tokens, concepts = self.board(rng, split, kind)
            rows.append(document(tokens, concepts, BOARD_TYPES.index(kind)))
        return rows


def document(tokens: list[str], concepts: list[list[str]], label: int) -> dict:
    """{"text", "label", "spans"}: the tokens joined by spaces, a span per concept of each cell."""
    spans, start = [], 0
    for token, names in zip(tokens, concepts):
        spans += [{"start": start, "end": start + len(token), "concept": c} for c in names]
        start += len(token) + 1
    return {"text": " ".join(tokens), "label": label, "spans": spans}


def concept_names(p: dict, change: dict | None) -> list[str]:
    n_roots = p["abs_n"] + (change["new"] if change else 0)
    fuzzy = [f"fuzzy_{m}" for m in range(p["abs_w_m"])] if p["abs_w_c"] else []
    return (
        [f"root_{r}" for r in range(n_roots)]
        + ([f"composite_{c}" for c in range(p["comp_n"])] if "composite" in p["board_types"] else [])
        + ["background"]
        + fuzzy
    )


def label_names(p: dict) -> list[str]:
    """Board types in the label order (single 0, double 1, composite 2), the configured ones only."""
    return [k for k in BOARD_TYPES if k in p["board_types"]]


def generate(p: dict, change: dict | None, n_train: int, n_test: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Train and test documents of one corpus (see the module docstring)."""
    base = make(p, seed)
    original = Generator(p, base, seed, list(range(p["abs_n"])))
    if not change:
        return original.documents(n_train, "train", seed, 0), original.documents(n_test, "test", seed, 1)
    after = changed(base, p, change, seed)
    kept = [r for r in range(len(after.roots)) if r not in change["removed"]]
    new = Generator(p, after, seed, kept)
    n_old = n_test // 2
    test = original.documents(n_old, "test", seed, 1) + new.documents(n_test - n_old, "test", seed, 2)
    n_original = n_train if change["original_boards"] is None else change["original_boards"]
    train = [{**d, "finetune": True} for d in new.documents(n_train, "train", seed, 3)]
    train += [{**d, "finetune": False} for d in original.documents(n_original, "train", seed, 4)]
    return train, test


def describe(p: dict, change: dict | None, seed: int) -> dict:
    """The generator's roots, composites and (with a change) the truth, for meta.json."""
    base = make(p, seed)
    a = changed(base, p, change, seed) if change else base
    return {
        "roots": [[[[int(t) for t in cell] for cell in row] for row in r] for r in a.roots],
        "fuzzy": a.fuzzy.astype(int).tolist(),
        "composites": a.composites.tolist(),
        "vocabulary": vocabulary(p),
        "change": change,
        "truth": truth(p, change) if change else None,
    }
