"""Start-up: how much of a finished study's job time passed before each job's first log line.

For every job of the Snakemake logs of a study folder, the time from the job's start (Snakemake's
log, 1 s resolution) to the first timestamp of its own log (imports, loading), against the job's
wall time (its benchmark file). Prints the share per stage and in all (the README's start-up
figures; a stage that logs only when done counts whole, so the share is an upper bound).

    python benchmarks/startup.py                 # the study in this folder (results/, .snakemake/log/)
    python benchmarks/startup.py --study /path/to/study
    python benchmarks/startup.py --imports       # each library's import time, and a job's start with and
                                                 # without the job server (workflow.runner.jobserver)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
LIBRARIES = ("numpy", "polars", "torch", "transformers", "sklearn.linear_model", "matplotlib.pyplot")


def jobs(study: Path) -> list[dict]:
    """Each job of the study's Snakemake logs: rule, start time, its log and benchmark files."""
    out = []
    for snakemake_log in sorted((study / ".snakemake" / "log").glob("*.snakemake.log")):
        when, job = None, None
        for line in snakemake_log.read_text().splitlines():
            if m := STAMP.match(line.strip()):
                when = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
            elif re.match(r"^(local)?rule \w+:$", line) and when is not None:
                job = {"rule": line.split()[-1].rstrip(":").removeprefix("rule "), "start": when}
                out.append(job)
            elif job is not None and line.strip().startswith(("log:", "benchmark:")):
                key, _, value = line.strip().partition(": ")
                job[key] = value
            elif not line.startswith(" "):
                job = None
    return [j for j in out if "log" in j and "benchmark" in j]


def first_line(log: Path) -> datetime | None:
    if not log.is_file():
        return None
    for line in log.read_text(errors="replace").splitlines():
        if m := LOG_LINE.match(line):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(microsecond=int(m.group(2)) * 1000)
    return None


def wall(benchmark: Path) -> float | None:
    if not benchmark.is_file():
        return None
    lines = benchmark.read_text().splitlines()
    return float(lines[-1].split("\t")[0]) if len(lines) > 1 else None


def shares(study: Path) -> None:
    per = defaultdict(lambda: [0, 0.0, 0.0])  # rule -> jobs, summed wall, summed start-up
    for job in jobs(study):
        first, seconds = first_line(study / job["log"]), wall(study / job["benchmark"])
        if first is None or seconds is None:
            continue
        startup = min(max((first - job["start"]).total_seconds(), 0.0), seconds)
        entry = per[job["rule"]]
        entry[0] += 1
        entry[1] += seconds
        entry[2] += startup
    total = [sum(v[i] for v in per.values()) for i in range(3)]
    print(f"{'stage':20s} {'jobs':>5s} {'job s':>8s} {'start-up s':>10s} {'share':>6s}")
    for rule, (n, seconds, startup) in sorted(per.items(), key=lambda kv: -kv[1][2]):
        print(f"{rule:20s} {n:5d} {seconds:8.0f} {startup:10.0f} {startup / seconds:6.1%}")
    print(f"{'all':20s} {total[0]:5d} {total[1]:8.0f} {total[2]:10.0f} {total[2] / total[1]:6.1%}")


def _seconds(cmd: list[str], env: dict, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def imports() -> None:
    """Each library's import in a fresh interpreter, and `python -m workflow <stage> --help` (which
    imports the stage) alone and through a warm job server."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    base = _seconds([sys.executable, "-c", "pass"], env)
    print(f"{'python itself':28s} {base:6.2f} s")
    for name in LIBRARIES:
        print(f"{'import ' + name:28s} {_seconds([sys.executable, '-c', f'import {name}'], env) - base:6.2f} s")
    job = [sys.executable, "-m", "workflow", "train_sae", "--help"]
    alone = _seconds(job, {**env, "WORKFLOW_JOB_SERVER": "off"})
    _seconds(job, env, repeats=1)  # starts the server
    served = _seconds(job, env)
    print(f"{'a job alone':28s} {alone:6.2f} s")
    print(f"{'a job through the server':28s} {served:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("."), help="the study folder (results/, .snakemake/)")
    parser.add_argument("--imports", action="store_true", help="time imports and a job's start instead")
    args = parser.parse_args()
    imports() if args.imports else shares(args.study)


if __name__ == "__main__":
    main()
