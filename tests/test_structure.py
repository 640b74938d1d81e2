"""The layout the README promises: one name per stage across rules, stage modules and tests; stages that do
not import each other; no import circle; thin stages; modules, functions and string constants that stay small."""

from __future__ import annotations

import ast
import re
import warnings

import pytest

from tests.conftest import ROOT
from workflow.runner.commands import GPU_STAGES, STAGES

PACKAGE = ROOT / "workflow"
MAX_FUNCTION_LINES, MAX_MODULE_LINES, MAX_STRING = 60, 400, 1500
# A module past MAX_MODULE_LINES is a warning, not a failure: split it by topic when its topics part,
# not to pass a count.
MAX_STAGE_LINES = 150  # a stage reads, calls its topic packages and writes: the method lives in those packages


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_is_one_name_in_three_places(stage):
    rules = (ROOT / "rules" / f"{stage}.smk").read_text()
    assert re.search(rf"^rule {stage}:", rules, flags=re.M), f"rules/{stage}.smk has no rule {stage}"
    assert f'{stage}_job = stage_job("{stage}"' in rules, f"rules/{stage}.smk does not run `python -m workflow {stage}`"
    assert (PACKAGE / "stages" / f"{stage}.py").is_file() and (ROOT / "tests" / f"test_{stage}.py").is_file()


def test_every_stage_module_is_a_stage_and_every_rule_file_is_included():
    assert {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"} == set(STAGES)
    snakefile = (ROOT / "Snakefile").read_text()
    for path in (ROOT / "rules").glob("*.smk"):
        assert f'include: "rules/{path.name}"' in snakefile, path.name
    assert {p.stem for p in (ROOT / "rules").glob("*.smk")} - {"common"} == set(STAGES)


def test_gpu_stages_are_the_rules_that_ask_for_a_gpu():
    asking = {stage for stage in STAGES if "gpu=1" in (ROOT / "rules" / f"{stage}.smk").read_text()}
    assert asking == set(GPU_STAGES)


def test_stages_never_import_each_other_and_nothing_imports_snakemake():
    for path in _modules():
        for node in ast.walk(_tree(path)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n.split(".")[0] == "snakemake" for n in names), f"{path} imports snakemake"
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.relative_to(ROOT)}:{node.lineno}: a relative import"
            if path.parent.name == "stages":
                stages = [n for n in names if n.startswith("workflow.stages.") and n != "workflow.stages.__init__"]
                assert not stages, f"{path.relative_to(ROOT)} imports another stage: {stages}"
                assert "importlib" not in names, f"{path.relative_to(ROOT)} imports by name"


def _imported(path, modules) -> set[str]:
    """Modules of the package that `path` imports anywhere in it: `from a import b` names module a.b where
    there is one, else a (a package that runs its own submodules is not counted as their importer)."""
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            )
    return {n for n in names if n in modules}


def test_no_import_circle():
    """Follow every import (inside functions too) from each module: none leads back to where it started."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in _modules()}
    graph = {name: _imported(path, modules) - {name} for name, path in modules.items()}
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            name = todo.pop()
            assert name != start, f"{start} imports itself through {sorted(seen)}"
            if name not in seen:
                seen.add(name)
                todo.extend(graph[name])


def test_stages_are_thin():
    long = {p.stem: p.read_text().count("\n") for p in (PACKAGE / "stages").glob("*.py")}
    assert not {k: v for k, v in long.items() if v > MAX_STAGE_LINES}, f"stages over {MAX_STAGE_LINES} lines"


def test_functions_and_strings_stay_small():
    problems = []
    for path in _modules():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            warnings.warn(f"{where}: {text.count(chr(10))} lines, over {MAX_MODULE_LINES}", stacklevel=1)
        tree = _tree(path)
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(f"{where}:{node.lineno} {node.name}: {length} lines")
            string = isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            if string and len(node.value) > MAX_STRING:
                problems.append(f"{where}:{node.lineno}: a {len(node.value)}-character string")
    assert not problems, "\n".join(problems)


def test_snakemake_lint_is_clean(tmp_path):
    from tests.conftest import run_snakemake

    result = run_snakemake(tmp_path, "--lint")
    out = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in out and "in a good condition" in out, out[-3000:]
