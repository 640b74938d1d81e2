"""Every job of a study, as Snakemake would run it from nothing: a forced dry run of the workflow
(`snakemake -n --forceall`), read for each job's rule, wildcards and thread count."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"


@dataclass
class Job:
    rule: str
    wildcards: dict[str, str] = field(default_factory=dict)
    threads: int = 1


def parse(text: str) -> list[Job]:
    """The jobs of a dry run's output (`rule NAME:` blocks with `wildcards:` and `threads:` lines);
    `rule all` is left out."""
    jobs: list[Job] = []
    for line in text.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            jobs.append(Job(m.group(1)))
        elif jobs and (m := re.match(r"^\s+wildcards: (.*)$", line)):
            jobs[-1].wildcards = dict(re.findall(r"(\w+)=(.*?)(?=, \w+=|$)", m.group(1)))
        elif jobs and (m := re.match(r"^\s+threads: (\d+)$", line)):
            jobs[-1].threads = int(m.group(1))
    jobs = [j for j in jobs if j.rule != "all"]
    stats = re.search(r"^total\s+(\d+)\s*$", text, flags=re.M)  # the dry run's "Job stats" table
    if stats is None or int(stats.group(1)) != len(jobs) + 1:  # + rule all
        raise SystemExit(
            f"could not read the dry run's jobs ({len(jobs)} parsed, the job stats say "
            f"{stats.group(1) if stats else 'nothing'}): is a Snakemake profile setting quiet or printshellcmds?"
        )
    return jobs


def dry_run(configfile: str | None, cwd: str | Path = ".") -> list[Job]:
    """The jobs of the study in `configfile` (None: the default config.yaml), run from `cwd`."""
    snakemake = Path(sys.executable).with_name("snakemake")
    # many cores: the dry run then shows each job's threads as configured
    cmd = [str(snakemake) if snakemake.exists() else "snakemake", "-n", "--forceall", "--cores", "1024"]
    cmd += ["-s", str(SNAKEFILE)] + (["--configfile", str(Path(configfile).resolve())] if configfile else [])
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit(f"cannot run {cmd[0]}: is Snakemake installed (make setup)?") from None
    if done.returncode != 0:
        # a bad config: Snakemake's output ends with the validation's message, which names the key
        raise SystemExit(f"the study does not validate ({' '.join(cmd[1:])}):\n{(done.stdout + done.stderr).strip()}")
    return parse(done.stdout)
