"""Each stage's code version follows the import graph: an edit re-runs exactly the stages that run the code."""

from __future__ import annotations

import ast
import shutil

import pytest

from tests.conftest import ROOT
from workflow.runner import codehash
from workflow.runner.codehash import closure, code_version, stage_files
from workflow.runner.commands import STAGES


@pytest.fixture
def tree(tmp_path):
    """A copy of the package to edit."""
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _names(files) -> set[str]:
    return {str(f.relative_to(ROOT)) for f in files}


def test_the_graph_follows_imports_inside_functions_and_through_other_modules():
    files = _names(stage_files("evaluate_sae"))
    # the stage imports analysis.splices, which imports models.hooks, which imports models.families
    assert {
        "workflow/stages/evaluate_sae.py",
        "workflow/analysis/splices.py",
        "workflow/models/hooks.py",
        "workflow/models/families.py",
        "workflow/__init__.py",
        "workflow/stages/__init__.py",
    } <= files
    # `load` imports sae.base inside the function; the architectures are registered by name, not imported
    assert "workflow/sae/base.py" in files and "workflow/sae/topk.py" not in files
    assert not any(name.startswith("workflow/report/") for name in files)
    assert "workflow/runner/commands.py" not in files  # the list of stages: adding a stage re-runs no other
    assert "workflow/runner/codehash.py" not in _names(stage_files("train_sae", "topk"))  # versions decide no output
    assert "workflow/models/hooks.py" not in _names(stage_files("train_sae", "topk"))
    assert _names(closure("workflow.sae.batchtopk")) >= {"workflow/sae/topk.py", "workflow/sae/kernels.py"}


def _every_import(path) -> set[str]:
    """The reference: the package modules a file imports, from the syntax tree of the whole file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return {n for n in found if n.split(".")[0] == "workflow" and codehash.module_file(n)}


def test_reading_only_the_import_statements_finds_every_import():
    for path in sorted((ROOT / "workflow").rglob("*.py")):
        assert codehash.imports(path) >= _every_import(path), path


def test_a_copied_tree_has_the_same_versions(tree):
    for stage in STAGES:
        assert code_version(stage, root=tree) == code_version(stage), stage


def test_editing_a_module_imported_only_indirectly_changes_the_stages_that_run_it(tree):
    before = {stage: code_version(stage, root=tree) for stage in STAGES}
    codehash.imports.cache_clear()
    with open(tree / "workflow/models/hooks.py", "a") as f:  # evaluate_sae reaches it only through analysis.splices
        f.write("\n# an edit\n")
    after = {stage: code_version(stage, root=tree) for stage in STAGES}
    changed = {stage for stage in STAGES if before[stage] != after[stage]}
    assert {"evaluate_sae", "diff", "heads", "extract", "similarity", "frozen_classifier"} <= changed
    assert changed.isdisjoint(
        {
            "dataset",
            "tokens",
            "finetune",
            "train_sae",
            "features",
            "diff_summary",
            "probe_summary",
            "heads_summary",
            "report_index",
        }
    )


def test_each_architecture_has_its_own_version_and_subclasses_follow_their_base(tree):
    versions = {a: code_version("train_sae", a, root=tree) for a in ("relu", "topk", "batchtopk", "jumprelu")}
    assert len(set(versions.values())) == 4
    with open(tree / "workflow/sae/topk.py", "a") as f:
        f.write("\n# an edit\n")
    edited = {a: code_version("train_sae", a, root=tree) for a in versions}
    assert edited["topk"] != versions["topk"] and edited["batchtopk"] != versions["batchtopk"]
    assert edited["relu"] == versions["relu"] and edited["jumprelu"] == versions["jumprelu"]


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="no stage 'tokenize'"):
        code_version("tokenize")


def test_editing_the_report_pages_re_runs_the_stages_that_render_them_not_those_that_only_plot(tree):
    """A stage that saves a figure imports `workflow.report.figures` (and so the report package's
    __init__), but only the stages that render pages read the templates, scripts and styles."""
    before = {stage: code_version(stage, root=tree) for stage in STAGES}
    codehash.imports.cache_clear()
    with open(tree / "workflow/report/static/heads.css", "a") as f:
        f.write("\n/* an edit */\n")
    after = {stage: code_version(stage, root=tree) for stage in STAGES}
    changed = {stage for stage in STAGES if before[stage] != after[stage]}
    assert {"report", "heads_summary"} <= changed
    assert changed.isdisjoint({"similarity", "features", "diff_summary", "probe_summary", "kmeans", "emergence"})
