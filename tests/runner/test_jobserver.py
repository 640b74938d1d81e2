"""The job server (`workflow.runner.jobserver`): a job run through it behaves as the same job run by itself
(outputs, exit status, error output, working directory, environment), a killed job's child dies
with it, and it stays out of the way where it must (switched off, inside SLURM)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from workflow.runner import jobserver

SPEC = {"source": "builtin", "task": "news_topic", "n_train": 60, "n_test": 20, "label_noise": 0.0, "seed": 0}
SPEC |= {"max_train": None, "max_test": None}


@pytest.fixture
def server_env(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORKFLOW_JOB_SERVER_DIR": str(tmp_path / "servers")}
    env |= {"WORKFLOW_JOB_SERVER": "on", "WORKFLOW_JOB_SERVER_IDLE": "20"}
    env.pop("SLURM_JOB_ID", None)
    yield env
    for log in (tmp_path / "servers").glob("*.log"):  # stop the servers this test started
        for line in log.read_text().splitlines():
            if "(pid " in line:
                pid = int(line.rsplit("(pid ", 1)[1].rstrip(")"))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)


def _job(args: list[str], env: dict, cwd: Path, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "workflow", *args], cwd=cwd, env=env, capture_output=True, text=True, **kwargs
    )


def _server_pids(env: dict) -> list[int]:
    pids = []
    for log in Path(env["WORKFLOW_JOB_SERVER_DIR"]).glob("*.log"):
        pids += [
            int(line.rsplit("(pid ", 1)[1].rstrip(")")) for line in log.read_text().splitlines() if "(pid " in line
        ]
    return pids


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_job_through_the_server_gives_what_it_gives_by_itself(server_env, tmp_path):
    off = {**server_env, "WORKFLOW_JOB_SERVER": "off"}
    for name, env in (("alone", off), ("served", server_env)):
        (tmp_path / name).mkdir()
        done = _job(["dataset", "--name", "news", "--spec", json.dumps(SPEC), "--out-dir", "out"], env, tmp_path / name)
        assert done.returncode == 0, done.stderr
    for f in ("train.parquet", "test.parquet", "meta.json"):  # written relative to the job's directory
        assert (tmp_path / "served/out" / f).read_bytes() == (tmp_path / "alone/out" / f).read_bytes(), f
    assert len(_server_pids(server_env)) == 1  # the served job started one server; the other ran alone
    bad = [
        _job(["dataset", "--name", "x", "--spec", "{not json", "--out-dir", "o"], e, tmp_path)
        for e in (off, server_env)
    ]
    assert bad[0].returncode == bad[1].returncode == 2
    assert bad[0].stderr == bad[1].stderr and "--spec" in bad[1].stderr
    # an unexpected error: a traceback on the job's standard error and exit status 1, as by itself
    crash = [_job(["dataset", "--name", "x", "--spec", "{}", "--out-dir", "o"], e, tmp_path) for e in (off, server_env)]
    assert crash[0].returncode == crash[1].returncode == 1
    assert "KeyError: 'source'" in crash[1].stderr and "Traceback" in crash[1].stderr


def test_the_child_takes_the_jobs_thread_count():
    import torch

    before = torch.get_num_threads()
    try:
        jobserver._limit_threads({"OMP_NUM_THREADS": "1"})  # Snakemake's threads of the rule
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_killed_job_takes_its_child_with_it(server_env, tmp_path):
    os.mkfifo(tmp_path / "never.csv")  # the job blocks opening it: a job that runs until killed
    spec = {"source": "file", "path": str(tmp_path / "never.csv"), "text_column": "text", "label_column": "label"}
    job = subprocess.Popen(
        [sys.executable, "-m", "workflow", "dataset", "--name", "x", "--spec", json.dumps(spec), "--out-dir", "o"],
        cwd=tmp_path,
        env=server_env,
        start_new_session=True,
    )
    deadline, children = time.monotonic() + 60, []
    while time.monotonic() < deadline and not children:
        children = [c for s in _server_pids(server_env) for c in _children(s)]
        time.sleep(0.1)
    assert children, "the job never reached the server"
    os.killpg(job.pid, signal.SIGKILL)  # the job and its process group, as Snakemake or a lost node would
    job.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.05)
    alive = [c for c in children if Path(f"/proc/{c}").exists() and "Z" not in Path(f"/proc/{c}/stat").read_text()]
    assert not alive, "the child outlived its job"


def test_it_is_off_where_it_must_be():
    assert not jobserver.enabled({"WORKFLOW_JOB_SERVER": "off"})
    assert not jobserver.enabled({"SLURM_JOB_ID": "12"})  # a server would die with the job that started it
    assert jobserver.enabled({})
    a = jobserver.socket_path({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert a == jobserver.socket_path({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"})  # applied per job
    assert a != jobserver.socket_path({"HF_HUB_OFFLINE": "0"})  # read by transformers at import: own server
