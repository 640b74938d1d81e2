"""A real one-node SLURM cluster for the tests: munge, slurmctld and slurmd started here (one GPU
declared for scheduling), stopped by the pids they were started with. Debian's `slurm-wlm` and
`munge` must be installed (`tests/install_system_packages.sh`).

The config goes to /etc/slurm/slurm.conf, where every SLURM command finds it: Snakemake's job step
runs `srun` inside each job with the SLURM_* variables (SLURM_CONF too) removed. It is removed again
at `stop()`; a machine that already has a slurm.conf of its own is left alone (the test skips)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("sbatch", "squeue", "sinfo", "slurmctld", "slurmd", "munged", "munge")
CONF_DIR = Path("/etc/slurm")
MARK = "# written by tests/slurm_node.py; removed when the test node stops\n"


def missing() -> str | None:
    """Why this machine cannot run the cluster, or None if it can."""
    absent = [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing; run tests/install_system_packages.sh as root)"
    if os.geteuid() != 0:
        return "the one-node SLURM cluster needs root (slurmd runs jobs as their users)"
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and not conf.read_text().startswith(MARK):
        return f"{conf} exists: this machine is configured for another SLURM cluster, which the test leaves alone"
    return None


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return max(1000, int(line.split()[1]) // 1024 - 2000)
    return 4000


CONF = """ClusterName=ci
SlurmctldHost={host}
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/run/slurmctld.pid
SlurmdPidFile={tmp}/run/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
SlurmUser=root
SlurmdUser=root
ReturnToService=2
SlurmctldPort=16817
SlurmdPort=16818
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
DefMemPerCPU=1000
GresTypes=gpu
NodeName={host} CPUs={cpus} RealMemory={mem} Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmNode:
    """Start with `start()`, stop with `stop()`; `env` holds SLURM_CONF for sbatch and friends."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.env = {**os.environ, "SLURM_CONF": str(CONF_DIR / "slurm.conf")}
        self.procs: list[subprocess.Popen] = []
        self.munged_pid: int | None = None

    def start(self, timeout: float = 60) -> None:
        for sub in ("state", "spool", "run", "log", "munge"):
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        CONF_DIR.mkdir(parents=True, exist_ok=True)
        (CONF_DIR / "slurm.conf").write_text(
            MARK + CONF.format(host=host, tmp=self.tmp, cpus=os.cpu_count(), mem=_mem_mb())
        )
        # without File= the node is INVAL
        (CONF_DIR / "gres.conf").write_text(MARK + "Name=gpu File=/dev/null Count=1\n")
        self._start_munge()
        for daemon in ("slurmctld", "slurmd"):
            out = open(self.tmp / "log" / f"{daemon}.out", "w")  # noqa: SIM115 (the daemon writes to it until stop())
            self.procs.append(
                subprocess.Popen(
                    [f"/usr/sbin/{daemon}", "-D", "-c"], stdout=out, stderr=subprocess.STDOUT, env=self.env
                )
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env
            ).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        logs = "\n".join((self.tmp / "log" / f).read_text()[-2000:] for f in ("slurmctld.out", "slurmd.out"))
        self.stop()
        raise RuntimeError(f"the SLURM node did not come up (state {state!r}):\n{logs}")

    def _start_munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
        run = Path("/run/munge")
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return  # a munged is already running (not ours: left alone)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        pid_file = run / "munged.pid"
        for _ in range(50):
            if pid_file.exists():
                self.munged_pid = int(pid_file.read_text().strip())
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the daemons this object started (and only those)."""
        subprocess.run(["scancel", "--full", "--user", "root"], capture_output=True, env=self.env)
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        if self.munged_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.munged_pid, signal.SIGTERM)
            self.munged_pid = None
        for name in ("slurm.conf", "gres.conf"):
            path = CONF_DIR / name
            if path.exists() and path.read_text().startswith(MARK):
                path.unlink()
