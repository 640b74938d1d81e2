"""Each stage's code version, derived from the import graph of the package.

Snakemake re-runs a job when its params change, but not when Python code that
its shell line calls changes. So every rule passes ``code_version(stage)`` as a
param: a hash of the stage module and of every module of this package that it
imports, directly or through others (every import statement, inside functions
too, parsed with `ast`), plus the files under ``templates/`` and ``static/`` of each package
those modules belong to (the report's page templates, scripts and styles).

SAE architectures are registered by name and imported when used
(`workflow.sae.ARCHITECTURES`), so they are not in a stage's graph: the SAE
stages add the graph of their recipe's architecture (``architecture=``), and
editing one architecture re-runs only the SAEs of that architecture.

No torch import: the Snakefile calls this for every rule on every start.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
import textwrap
from pathlib import Path

PACKAGE = "workflow"
ROOT = Path(__file__).resolve().parents[2]  # holds the package folder
DATA_FOLDERS = ("templates", "static")


@functools.cache
def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of module `name` (``workflow.a.b``) under `root`, or None if there is none."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# An import statement: `import a, b` or `from x import y`, the latter with its parenthesised
# continuation lines. Only these statements are parsed (with `ast`): parsing whole files costs
# ~0.3 s per Snakemake start, parsing their imports ~0.02 s. A docstring line that reads like an
# import only adds a dependency (a conservative error); real code always parses.
IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+[.\w]+[ \t]+import[ \t]*(?:\([^)]*\)|[^\n]*)|import[ \t]+[^\n]*)", re.M)


def _statements(text: str):
    for match in IMPORT_LINE.finditer(text):
        try:
            yield from ast.parse(textwrap.dedent(match.group(0))).body
        except SyntaxError:  # prose in a docstring or comment that starts like an import
            continue


@functools.cache
def imports(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Modules of the package that the file at `path` imports (anywhere in it)."""
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in _statements(path.read_text(encoding="utf-8")):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return frozenset(name for name in found if name.split(".")[0] == PACKAGE and module_file(name, root))


def _with_parents(name: str) -> list[str]:
    """A module and the packages above it: importing it runs their __init__ too."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.cache
def closure(module: str, root: Path = ROOT) -> tuple[Path, ...]:
    """Files of `module` and of every package module it imports, directly or not, sorted. This module
    is left out: the SAE stages ask it for the trainer's version (to match checkpoints), but it
    decides no stage's output."""
    seen, todo = set(), [module]
    while todo:
        for name in _with_parents(todo.pop()):
            if name in seen or name == __name__ or module_file(name, root) is None:
                continue
            seen.add(name)
            todo.extend(imports(module_file(name, root), root))
    return tuple(sorted(module_file(name, root) for name in seen))


def data_files(modules: list[Path]) -> list[Path]:
    """Template and static files of the packages the modules belong to. A package's ``__init__`` alone
    does not count: importing `workflow.report.figures` runs `workflow/report/__init__.py`, but only a
    module of the report package itself (its renderer) reads the report's templates and scripts."""
    folders = {path.parent / name for path in modules if path.name != "__init__.py" for name in DATA_FOLDERS}
    return sorted(f for folder in folders if folder.is_dir() for f in folder.rglob("*") if f.is_file())


@functools.cache
def stage_files(stage: str, architecture: str | None = None, root: Path = ROOT) -> tuple[Path, ...]:
    """Every file whose content decides what `stage` (and its SAE architecture) computes."""
    files = set(closure(f"{PACKAGE}.stages.{stage}", root))
    if architecture is not None:
        from workflow.sae import ARCHITECTURES, CROSSCODERS

        files.update(closure({**ARCHITECTURES, **CROSSCODERS}[architecture].partition(":")[0], root))
    modules = sorted(files)
    return tuple(modules + data_files(modules))


def code_version(stage: str, architecture: str | None = None, root: Path = ROOT) -> str:
    """Hash of `stage_files`: a params entry, so editing what a stage runs re-runs it."""
    if module_file(f"{PACKAGE}.stages.{stage}", root) is None:
        raise ValueError(f"no stage {stage!r}: {root / PACKAGE / 'stages'} has no {stage}.py")
    digest = hashlib.sha256()
    for path in stage_files(stage, architecture, root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + _digest(path, path.stat().st_mtime_ns))
    return digest.hexdigest()[:16]


@functools.cache
def _digest(path: Path, mtime_ns: int) -> bytes:
    """A file's hash; `mtime_ns` is part of the key, so an edited file is read again."""
    return hashlib.sha256(path.read_bytes()).digest()
