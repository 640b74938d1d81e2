"""Paths are written once: the layout's templates, and no stage or rule writes a results path itself."""

from __future__ import annotations

import doctest
import re

from tests.conftest import ROOT
from workflow import layout


def test_doctests():
    assert doctest.testmod(layout).failed == 0


def test_folders_fill_their_wildcards_and_keep_the_others():
    assert (
        layout.SAE.file("eval", model="m", variant="finetuned", dataset="d", site="resid_post", layer=2, sae="topk")
        == "results/saes/m/finetuned/d/resid_post/L2/topk/eval.json"
    )
    assert (
        layout.ACTIVATIONS.pattern("summary", split="train")
        == "results/activations/{model}/{variant}/{dataset}/train/extract.json"
    )
    assert (
        layout.ACTIVATION_SET.path(model="m", variant="pretrained", dataset="d", split="test", site="mlp_out", layer=1)
        == "results/activations/m/pretrained/d/test/mlp_out/L1"
    )
    assert layout.log("probe", "{model}") == "logs/probe/{model}.log"


def test_no_rule_or_stage_spells_out_a_results_path():
    literal = re.compile(r"[\"']results/")
    for path in [*ROOT.glob("rules/*.smk"), ROOT / "Snakefile", *(ROOT / "workflow").rglob("*.py")]:
        if path.name == "layout.py":
            continue
        found = [line for line in path.read_text().splitlines() if literal.search(line) or "$(dirname" in line]
        assert not found, f"{path.relative_to(ROOT)} writes paths itself: {found[:3]}"
