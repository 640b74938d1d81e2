"""Kill tests of the long stages: `kill -9` of Snakemake and its job at a random point of one job,
then `snakemake --unlock` and the same command again, must give the outputs of an uninterrupted run.

The random point: every atomic rename (`os.replace`: an output file, a set, a folder or a
checkpoint becoming visible) of an uninterrupted run of the job is counted, and the killed run
dies just before the n-th one, n drawn with a seed. `sitecustomize.py` (on PYTHONPATH) does it
inside the job's process only (its argv names the stage), by SIGKILL to the whole process group:
the job and Snakemake die together, as on a lost node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from tests.conftest import ROOT

SITE = """\
import os, signal, sys

if len(sys.argv) > 1 and sys.argv[1] == os.environ.get("KILL_STAGE"):
    _replace, _calls = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        _calls[0] += 1
        with open(os.environ["KILL_COUNT"], "a") as f:
            f.write(os.fspath(dst) + "\\n")
        if _calls[0] == int(os.environ.get("KILL_AT", "0")):
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return _replace(src, dst, *args, **kwargs)

    os.replace = replace
"""

# keys and columns that hold timings, devices or absolute paths: they differ between any two runs
VOLATILE = ("seconds", "tokens_per_s", "per_s", "time", "device", "elapsed", "started", "finished")


def _volatile(key: str) -> bool:
    return any(v in key for v in VOLATILE)


def _stable(obj, *roots: str):
    if isinstance(obj, dict):
        return {k: _stable(v, *roots) for k, v in obj.items() if not _volatile(k)}
    if isinstance(obj, list):
        return [_stable(v, *roots) for v in obj]
    if isinstance(obj, str):
        for root in roots:
            obj = obj.replace(root, "<study>")
    return obj


def assert_true_checksums(a: Path, b: Path) -> None:
    """checksums.json digests files whose timings differ between runs: the re-run's must list the
    same files as the uninterrupted run's, each as it is on disk now."""
    from workflow.store import checksums

    assert json.loads(a.read_text())["files"].keys() == json.loads(b.read_text())["files"].keys(), b
    assert checksums.problems(b.parent) == [], b


def assert_same_file(a: Path, b: Path, root_a: Path, root_b: Path) -> None:
    """`b` holds what `a` holds: tensors equal, tables and JSON equal up to timings and paths."""
    assert b.exists(), f"{b} is missing after the re-run"
    if a.name == "checksums.json":
        assert_true_checksums(a, b)
    elif a.suffix == ".json":
        assert _stable(json.loads(a.read_text()), str(root_a)) == _stable(json.loads(b.read_text()), str(root_b)), a
    elif a.suffix == ".parquet":
        fa, fb = pl.read_parquet(a), pl.read_parquet(b)
        fa, fb = (f.drop([c for c in f.columns if _volatile(c)]) for f in (fa, fb))
        assert fa.equals(fb), f"{a.name} differs: {fa} vs {fb}"
    elif a.suffix == ".safetensors":
        from safetensors.numpy import load_file

        ta, tb = load_file(a), load_file(b)
        assert ta.keys() == tb.keys(), a
        for key in ta:
            np.testing.assert_array_equal(ta[key], tb[key], err_msg=f"{a}: {key}")
    elif a.suffix == ".npy":
        np.testing.assert_array_equal(np.load(a), np.load(b), err_msg=str(a))
    elif a.suffix not in (".png", ".log", ".pt"):  # plots embed nothing of interest; checkpoints go
        assert a.read_bytes() == b.read_bytes(), a


class KillRun:
    """One stage's kill test on a copy of a finished study (`study`: its folder, with study.yaml)."""

    def __init__(self, study: Path, stage: str, target: str, where: Path):
        self.study, self.stage, self.target, self.where = study, stage, target, where
        (where / "site").mkdir(parents=True, exist_ok=True)
        (where / "site/sitecustomize.py").write_text(SITE)

    def _snakemake(self, work: Path, *args: str, kill_at: int | None = None) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1",
            # the kill point is counted inside the job's own process (sitecustomize); through the job
            # server the stage would run in a child of the server (tests/runner/test_jobserver.py kills those)
            "WORKFLOW_JOB_SERVER": "off",
        }
        if kill_at is not None:
            env.update(
                PYTHONPATH=str(self.where / "site"),
                KILL_STAGE=self.stage,
                KILL_COUNT=str(work / "renames.txt"),
                KILL_AT=str(kill_at),
            )
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "1", *args]
        return subprocess.run(
            [*cmd, "--configfile", "study.yaml"],  # --configfile takes several values: it goes last
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            start_new_session=True,  # its own process group, which the kill takes down
        )

    def copy(self, name: str) -> Path:
        work = self.where / name
        shutil.copytree(self.study, work, symlinks=True)  # times kept: nothing upstream looks outdated
        return work

    def run(self, seed: int, after: str | None = None) -> tuple[Path, Path, str]:
        """(uninterrupted copy, killed-and-re-run copy, the re-run job's log). `after`: kill between
        the first rename to a file of this name (a checkpoint) and the rename after the last one, so
        the re-run has a checkpoint to resume from."""
        clean = self.copy("clean")
        done = self._snakemake(clean, "--force", self.target, kill_at=0)
        assert done.returncode == 0, done.stderr[-3000:]
        renames = (clean / "renames.txt").read_text().splitlines()
        hits = [i for i, r in enumerate(renames) if Path(r).name == after]
        assert after is None or hits, f"the uninterrupted {self.stage} job never wrote {after}"
        low, high = (hits[0] + 2, hits[-1] + 2) if after else (1, len(renames))
        kill_at = int(np.random.default_rng(seed).integers(low, high + 1))  # dies before this rename
        killed = self.copy("killed")
        dead = self._snakemake(killed, "--force", self.target, kill_at=kill_at)
        assert dead.returncode == -signal.SIGKILL, (dead.returncode, dead.stderr[-3000:])
        assert len((killed / "renames.txt").read_text().splitlines()) == kill_at
        unlock = self._snakemake(killed, "--unlock")
        assert unlock.returncode == 0, unlock.stderr[-3000:]
        again = self._snakemake(killed, self.target)  # the same target; --rerun-incomplete is in the profile
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"rule {self.stage}:" in again.stdout + again.stderr, "the re-run must re-make the killed job"
        logs = sorted((killed / "logs" / self.stage).rglob("*.log"), key=lambda p: p.stat().st_mtime)
        return clean, killed, logs[-1].read_text()

    @staticmethod
    def assert_same(clean: Path, killed: Path, *relative: str) -> None:
        """Every file under each `relative` path of the uninterrupted copy equals the re-run's, the
        re-run left no other file there, and no partial file or folder anywhere in its results."""
        for rel in relative:
            files = [clean / rel] if (clean / rel).is_file() else sorted((clean / rel).rglob("*"))
            files = [f for f in files if f.is_file() and f.name != "renames.txt"]
            assert files, f"nothing under {clean / rel}"
            for f in files:
                assert_same_file(f, killed / f.relative_to(clean), clean, killed)
            if (killed / rel).is_dir():
                extra = {p.relative_to(killed) for p in (killed / rel).rglob("*") if p.is_file()}
                assert extra <= {f.relative_to(clean) for f in files}, extra - {f.relative_to(clean) for f in files}
        leftovers = [p for p in (killed / "results").rglob("*") if ".partial-" in p.name]
        assert not leftovers, leftovers
