"""GPU assignment with a fake device pool: concurrent jobs never share a card, a killed job frees its
card, and every rule that asks Snakemake for a GPU claims one."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT
from workflow.runner import gpus
from workflow.runner.commands import GPU_STAGES

JOB = """
import json, os, sys, time
from workflow.runner import gpus
card = gpus.claim(poll_seconds=0.02)
start = time.time()
time.sleep(float(sys.argv[1]))
print(json.dumps({"card": card, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}))
"""


def _env(tmp_path, cards: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    return {**env, "STUDY_GPUS": cards, "STUDY_GPU_LOCKS": str(tmp_path / "locks"), "PYTHONPATH": str(ROOT)}


def _start(tmp_path, cards: str, hold: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(hold)],
        env=_env(tmp_path, cards),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_jobs_never_share_a_card(tmp_path):
    jobs = [_start(tmp_path, "0,1,2", 0.3) for _ in range(12)]  # 12 jobs, 3 cards: most must wait their turn
    records = [json.loads(job.communicate(timeout=60)[0]) for job in jobs]
    assert all(r["card"] == r["visible"] for r in records)  # the job sees only its card
    by_card: dict[str, list] = {}
    for r in records:
        by_card.setdefault(r["card"], []).append((r["start"], r["end"]))
    assert set(by_card) == {"0", "1", "2"}
    for card, spans in by_card.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"card {card} held by two jobs at once"


def test_a_killed_job_frees_its_card(tmp_path):
    holder = _start(tmp_path, "0", 30)
    time.sleep(1.5)  # it claims the only card and sleeps
    waiter = _start(tmp_path, "0", 0)
    time.sleep(1.0)
    assert waiter.poll() is None  # the card is taken: the second job waits
    holder.send_signal(signal.SIGKILL)  # no clean-up code runs
    killed_at = time.time()
    record = json.loads(waiter.communicate(timeout=20)[0])
    assert record["card"] == "0" and record["start"] >= killed_at - 0.1
    assert holder.wait() == -signal.SIGKILL


def test_no_cards_no_claim_and_slurm_chooses(monkeypatch, tmp_path):
    monkeypatch.setenv("STUDY_GPU_LOCKS", str(tmp_path / "locks"))
    monkeypatch.setenv("STUDY_GPUS", "")
    assert gpus.claim() is None  # an empty pool: a CPU machine
    monkeypatch.delenv("STUDY_GPUS")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpus.claim() is None  # inside a SLURM job the scheduler's choice stands
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_the_pool_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.delenv("STUDY_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpus.pool() == ["2", "3"]  # a run limited to cards 2 and 3 hands out only those


def test_every_rule_that_asks_for_a_gpu_claims_one():
    declared = set()
    for path in (ROOT / "rules").glob("*.smk"):
        for _rule, body in re.findall(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), flags=re.M):
            if re.search(r"^\s+gpu=", body, flags=re.M):
                job = re.search(r"(\w+)_job\.shell\(", body).group(1)  # rules/common.smk's stage_job
                made = re.search(rf'^{job}_job = stage_job\("(\w+)"[^)]*?(?:stage="(\w+)")?\)', path.read_text(), re.M)
                declared.add(made.group(2) or made.group(1))  # the stage it runs
    assert declared == set(GPU_STAGES)
