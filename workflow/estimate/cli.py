"""`python -m workflow estimate [--configfile my.yaml]`: what a study will cost before it runs.

For each stage: its jobs (Snakemake's forced dry run of the study), the tokens they process, the
bytes they write (activation sets: tokens x d_model x layers x sites x variants x splits x bytes;
models, SAEs, feature tables, reports), the largest job's peak memory, and the summed job time on
each machine of the throughput table (`workflow/estimate/throughputs.yaml`: figures the benchmarks
measured, each with its command, machine and date; a machine without a figure a stage needs shows
no time for it). Prints a warning where the study would write more than the results folder's disk
has free.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
from collections import defaultdict
from pathlib import Path

import yaml

from workflow import config as study_config
from workflow.estimate.costs import Costs
from workflow.estimate.jobs import dry_run
from workflow.estimate.sizes import Sizes

TABLE = Path(__file__).with_name("throughputs.yaml")
log = logging.getLogger(__name__)


def machines(path: Path = TABLE) -> dict:
    return yaml.safe_load(path.read_text())["machines"]


def seconds(work: dict[str, float], threads: int, machine: dict) -> float | None:
    """A job's time on a machine: its start-up plus each kind of work over the machine's rate (None
    if the machine has no figure for one of them)."""
    figures = machine["figures"]
    if "job_start_s" not in figures:
        return None
    total = figures["job_start_s"]["seconds_each"]
    for kind, amount in work.items():
        if kind not in figures:
            return None
        figure = figures[kind]
        if "seconds_each" in figure:  # fixed work: seconds per unit
            total += amount * figure["seconds_each"]
        else:  # a rate: units per second (per thread where the machine's figures are)
            scale = min(threads, machine.get("cores", threads)) if machine.get("per_thread") else 1
            total += amount / (figure["per_second"] * scale)
    return total


def estimate(configfile: str | None, cwd: str | Path = ".", table: Path = TABLE) -> dict:
    """Per stage and in total: jobs, tokens, disk bytes, peak memory bytes, and seconds per machine.
    Relative paths in the study (data files) are read from `cwd`, as Snakemake's --directory."""
    configfile = str(Path(configfile).resolve()) if configfile else None
    if not Path(cwd).is_dir():
        raise SystemExit(f"--directory: {cwd} is not a folder")
    with contextlib.chdir(cwd):
        return _estimate(configfile, table)


def _estimate(configfile: str | None, table: Path) -> dict:
    path = Path(configfile or Path(__file__).resolve().parents[2] / "config.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"--configfile: cannot read {path}: {exc}") from None
    study = study_config.load(raw or {})
    jobs = dry_run(configfile)
    sizes = Sizes(study)
    costs = Costs(study, sizes)
    kinds = machines(table)
    stages: dict[str, dict] = defaultdict(
        lambda: {"jobs": 0, "tokens": 0, "disk": 0.0, "memory": 0.0, "seconds": dict.fromkeys(kinds, 0.0)}
    )
    for job in jobs:
        cost = costs.cost(job.rule, job.wildcards)
        row = stages[job.rule]
        row["jobs"] += 1
        row["tokens"] += cost.tokens
        row["disk"] += cost.disk
        row["memory"] = max(row["memory"], cost.memory)
        for name, machine in kinds.items():
            t = seconds(cost.work, job.threads, machine)
            row["seconds"][name] = None if t is None or row["seconds"][name] is None else row["seconds"][name] + t
    total = {
        "jobs": sum(r["jobs"] for r in stages.values()),
        "tokens": sum(r["tokens"] for r in stages.values()),
        "disk": sum(r["disk"] for r in stages.values()),
        "memory": max((r["memory"] for r in stages.values()), default=0.0),
        "seconds": {
            name: None
            if any(r["seconds"][name] is None for r in stages.values())
            else sum(r["seconds"][name] for r in stages.values())
            for name in kinds
        },
    }
    return {
        "stages": dict(stages),
        "total": total,
        "machines": {name: m["name"] for name, m in kinds.items()},
        "notes": sizes.notes,
        "results": str(Path.cwd() / "results"),
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""


def human_time(s: float | None) -> str:
    if s is None:
        return "not measured"
    if s < 90:
        return f"{s:,.0f} s"
    if s < 5400:
        return f"{s / 60:,.1f} min"
    return f"{s / 3600:,.1f} h"


def render(est: dict) -> str:
    names = list(est["machines"])
    head = ["stage", "jobs", "tokens", "disk", "peak memory", *(f"time: {n}" for n in names)]
    rows = [
        [stage, str(r["jobs"]), f"{r['tokens']:,}", human_bytes(r["disk"]), human_bytes(r["memory"]),
         *(human_time(r["seconds"][n]) for n in names)]
        for stage, r in est["stages"].items()
    ]  # fmt: skip
    t = est["total"]
    rows.append(["total", str(t["jobs"]), f"{t['tokens']:,}", human_bytes(t["disk"]), human_bytes(t["memory"]),
                 *(human_time(t["seconds"][n]) for n in names)])  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join
    out = [line(h.ljust(w) for h, w in zip(head, widths))]
    out += [line(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    out.insert(len(out) - 1, "-" * len(out[0]))
    out.append("")
    out += [f"time: {n} = {desc}: the jobs' times summed (with jobs of one thread, the wall time at "
            f"--cores N is about this over N)" for n, desc in est["machines"].items()]  # fmt: skip
    out += [f"note: {note}" for note in est["notes"]]
    out += warnings(est)
    return "\n".join(out)


def warnings(est: dict) -> list[str]:
    """A study that would not fit the disk says so."""
    folder = Path(est["results"])
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    disk = est["total"]["disk"]
    if disk > free:
        return [f"WARNING: the study writes {human_bytes(disk)}, more than the {human_bytes(free)} free under {folder}"]
    return []


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m workflow estimate", description=__doc__.splitlines()[0])
    p.add_argument("--configfile", default=None, help="the study config (default: the repository's config.yaml)")
    p.add_argument("--directory", default=".", help="where the study runs (its results/ folder), as for snakemake")
    p.add_argument("--json", action="store_true", help="print the figures as JSON (bytes, seconds)")
    args = p.parse_args(argv)
    try:
        est = estimate(args.configfile, args.directory)
    except study_config.ConfigError as exc:
        raise SystemExit(str(exc)) from None
    print(json.dumps(est, indent=1) if args.json else render(est))
