"""The ``abstractions`` source of a study (boards with known abstractions, `workflow.datasets.abstractions`):
its generator parameters with the seed study's defaults filled in, their checks (each naming its
key, before any job starts), and its train and test tables.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.datasets import SPAN_TYPE, abstractions
from workflow.datasets.abstractions import composite_width, placements


def params(spec: dict) -> dict:
    """The generator parameters of a `source: abstractions` dataset, defaults filled in."""
    return {**abstractions.DEFAULTS, **(spec.get("board") or {})}


def change(spec: dict) -> dict | None:
    """The declared change with its defaults, or None."""
    declared = spec.get("change")
    return {**abstractions.CHANGE_DEFAULTS, **declared} if declared else None


def load(spec: dict) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    """Train and test tables (text, label, spans) and the label names (board types)."""
    p = params(spec)
    train, test = abstractions.generate(p, change(spec), spec["n_train"], spec["n_test"], spec["seed"])
    schema = {"text": pl.Utf8, "label": pl.Int64, "spans": SPAN_TYPE}
    # labels are board types (single 0, double 1, composite 2): renumbered over the configured ones
    names = abstractions.label_names(p)
    ids = {abstractions.BOARD_TYPES.index(k): i for i, k in enumerate(names)}
    tables = []
    for rows in (train, test):
        extra = {"finetune": pl.Boolean} if rows and "finetune" in rows[0] else {}
        tables.append(pl.DataFrame([{**r, "label": ids[r["label"]]} for r in rows], schema=schema | extra))
    return tables[0], tables[1], names


def check_spec(spec: dict, where: str) -> list[str]:
    return check(params(spec), change(spec), where)


def check(board: dict, declared: dict | None, where: str) -> list[str]:
    """Problems with generator parameters and a declared change, each naming its key."""
    out = check_shape(board, f"{where}.board")
    if out:
        return out
    least = min(placements(board, kind) for kind in board["board_types"])
    if board["card_test"] >= least:
        kind = min(board["board_types"], key=lambda k: placements(board, k))
        out.append(
            f"{where}.board.card_test: {board['card_test']} held-out placements per abstraction leave none to "
            f"train on: a {kind} board has {least} placements (positions x vocab_bck backgrounds)"
        )
    return out + (check_change(board, declared, f"{where}.change") if declared else [])


def check_shape(p: dict, key: str) -> list[str]:
    """Footprints, composites and board types that do not fit the board."""
    out = []
    if p["abs_dim"] > p["board_dim"]:
        out.append(
            f"{key}.abs_dim: a {p['abs_dim']}x{p['abs_dim']} root does not fit a board_dim {p['board_dim']} board"
        )
    if p["abs_c"] > p["abs_dim"] ** 2:
        out.append(
            f"{key}.abs_c: {p['abs_c']} object tokens exceed the {p['abs_dim'] ** 2} cells "
            f"of an abs_dim {p['abs_dim']} footprint"
        )
    if p["abs_w_c"] > p["abs_c"]:
        out.append(f"{key}.abs_w_c: {p['abs_w_c']} fuzzy cells exceed the abs_c {p['abs_c']} object cells of a root")
    if p["abs_w_c"] and p["abs_w_m"] > p["vocab_token"]:
        out.append(
            f"{key}.abs_w_m: {p['abs_w_m']} modes of a fuzzy cell need as many object tokens "
            f"(vocab_token {p['vocab_token']})"
        )
    if p["comp_c"] > p["comp_dim"] ** 2:
        out.append(
            f"{key}.comp_c: {p['comp_c']} roots exceed the {p['comp_dim'] ** 2} places "
            f"of a comp_dim {p['comp_dim']} composite"
        )
    if "composite" in p["board_types"] and composite_width(p) > p["board_dim"]:
        out.append(
            f"{key}.comp_dim: a composite spans {composite_width(p)} cells (comp_dim {p['comp_dim']} x abs_dim "
            f"{p['abs_dim']} + {p['comp_dim'] - 1} x comp_margin {p['comp_margin']}), "
            f"more than board_dim {p['board_dim']}"
        )
    if len(p["board_types_proba"]) != len(p["board_types"]):
        out.append(
            f"{key}.board_types_proba: {len(p['board_types_proba'])} probabilities "
            f"for {len(p['board_types'])} board_types"
        )
    elif not np.isclose(sum(p["board_types_proba"]), 1.0) or min(p["board_types_proba"]) < 0:
        out.append(f"{key}.board_types_proba: {p['board_types_proba']} must be non-negative and sum to 1")
    if "double" in p["board_types"] and p["board_dim"] - p["abs_dim"] + 1 < 2:
        out.append(
            f"{key}.board_dim: double boards need two root positions differing in row and column; "
            f"a board_dim {p['board_dim']} board with abs_dim {p['abs_dim']} has one"
        )
    return out


def check_change(p: dict, declared: dict, key: str) -> list[str]:
    """Roots and composites a declared change names that do not exist, or cannot change."""
    out, roots = [], set(range(p["abs_n"]))
    for name in ("changed", "removed"):
        bad = sorted(set(declared[name]) - roots)
        if bad:
            out.append(f"{key}.{name}: roots {bad} do not exist (abs_n is {p['abs_n']}: 0..{p['abs_n'] - 1})")
    both = sorted(set(declared["changed"]) & set(declared["removed"]))
    if both:
        out.append(f"{key}: roots {both} are both changed and removed")
    if p["abs_c"] - p["abs_w_c"] < 1 and declared["changed"]:
        out.append(f"{key}.changed: a root without a fixed object cell cannot have one replaced")
    if p["vocab_token"] < 2 and declared["changed"]:
        out.append(f"{key}.changed: replacing a token needs vocab_token of 2 or more")
    bad = sorted(set(declared["redefined"]) - set(range(p["comp_n"])))
    if bad:
        out.append(f"{key}.redefined: composites {bad} do not exist (comp_n is {p['comp_n']})")
    if len(set(declared["removed"])) == p["abs_n"] and not declared["new"]:
        out.append(f"{key}.removed: every root removed and none new leaves boards with no object")
    return out
