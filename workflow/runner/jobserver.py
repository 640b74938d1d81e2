"""Jobs that start without their imports: a fork server for ``python -m workflow`` on one machine.

Most jobs of a study are short, and each used to spend seconds importing torch, transformers,
scikit-learn and matplotlib before its first line of work (the README's start-up figures). Here
the first job of a machine starts a server that imports those libraries once and then waits on a
Unix socket; every job (`client`) connects, hands over its standard input, output and error, its
arguments, working directory and environment, and the server forks a child that runs the stage
with the libraries already in memory. The job process stays what Snakemake started: it waits for
the child's exit status and exits with it, so logs, exit codes, re-runs and Snakemake's view of the
job are unchanged. The stage's own code is imported fresh in every child (the server imports only
third-party libraries), so an edited stage runs as edited.

Safety:

- the child gets the job's environment (thread counts applied to torch and the BLAS pools) and
  working directory; it never shares a computation with the server, which computes nothing, so
  no thread pool has started before the fork;
- a job killed however (Snakemake stopped, ``kill -9`` of its process group) closes its socket;
  the server then kills the child at once;
- the server's socket name hashes the interpreter, its installed packages (the site-packages
  folder's time of change), this file and the environment the libraries read at import
  (``HF_*``, ``TRANSFORMERS_*``, ``TORCH*``, ``PYTHON*``, ``MPL*``...), so a job never lands
  in a server that imported under other settings;
- it is off inside SLURM jobs (a server started in one job's allocation would die with that job)
  and where ``WORKFLOW_JOB_SERVER=off``; a job that cannot reach a server runs by itself as before;
- the server leaves when no job has used it for `IDLE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

# what the stages import (each a module, or module:attribute for transformers' lazy attributes):
# about 8 s once, where each job used to spend 1.5-5 s of it
PRELOAD = (
    "numpy",
    "polars",
    "pyarrow.parquet",
    "safetensors.torch",
    "safetensors.numpy",
    "torch",
    "torch._dynamo",  # torch.optim imports it on the first optimizer: 1.6 s of each SAE job
    "tokenizers",
    *(
        f"transformers:{name}"
        for name in (
            "AutoConfig",
            "AutoModel",
            "AutoModelForSequenceClassification",
            "AutoModelForCausalLM",
            "AutoModelForMaskedLM",
            "AutoTokenizer",
            "PreTrainedTokenizerFast",
            "DataCollatorForLanguageModeling",
            "get_linear_schedule_with_warmup",
        )
    ),
    "sklearn.linear_model",
    "sklearn.metrics",
    "sklearn.model_selection",
    "sklearn.preprocessing",
    "sklearn.feature_selection",
    "sklearn.feature_extraction.text",
    "sklearn.cluster",
    "scipy.optimize",
    "scipy.spatial.distance",
    "matplotlib.pyplot",
    "jinja2",
)
IDLE_SECONDS = 120.0  # the server exits after this long without a job (WORKFLOW_JOB_SERVER_IDLE)
START_SECONDS = 60.0  # how long a job waits for a server it started to listen
ENV_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "PYTORCH", "PYTHON", "MPL", "CUDA", "XDG", "TOKENIZERS")
MAX_REQUEST = 1 << 20


def enabled(env=os.environ) -> bool:
    return env.get("WORKFLOW_JOB_SERVER", "on").lower() not in ("off", "0", "false") and not env.get("SLURM_JOB_ID")


def socket_path(env=os.environ) -> Path:
    """The socket of the server this job may use (see the module docstring for what it hashes)."""
    keys = {k: v for k, v in env.items() if k.startswith(ENV_PREFIXES)}
    installed = os.stat(sysconfig.get_paths()["purelib"]).st_mtime_ns  # changes when pip adds or removes a package
    blob = json.dumps([sys.executable, installed, Path(__file__).read_bytes().hex(), keys], sort_keys=True)
    folder = Path(env.get("WORKFLOW_JOB_SERVER_DIR") or f"/tmp/workflow-jobserver-{os.getuid()}")
    return folder / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.sock"


# ------------------------------------------------------------------ the job's side


def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _start(path: Path) -> socket.socket | None:
    """Connect to the server at `path`, starting it first where none listens (one starter at a time)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        log = open(path.with_suffix(".log"), "ab")  # noqa: SIM115 (the server's own output)
        subprocess.Popen(
            [sys.executable, "-m", "workflow.runner.jobserver", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # not in the job's process group: a killed job leaves it running
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.05)
    return None


def client(argv: list[str]) -> int | None:
    """Run ``python -m workflow <argv>`` in a child of this machine's server; its exit status, or
    None where no server could take the job (the caller then runs it itself)."""
    if not enabled():
        return None
    path = socket_path()
    try:
        conn = _connect(path) or _start(path)
    except OSError:
        return None
    if conn is None:
        return None
    with conn, conn.makefile("rb") as replies:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        try:
            socket.send_fds(conn, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
            if replies.readline() != b"started\n":
                return None
        except OSError:
            return None  # nothing ran: run it here
        reply = replies.readline()  # "exit N", or nothing where the server stopped during the job
        if not reply.startswith(b"exit "):
            print("the job server stopped during the job: run the job again", file=sys.stderr)
            return 1
        return int(reply.split()[1])


# ------------------------------------------------------------------ the server's side


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 3)
    size = int.from_bytes(data[:8], "big")
    while len(data) < size + 8:
        more = conn.recv(MAX_REQUEST)
        if not more:
            raise ConnectionError("short request")
        data += more
    return json.loads(data[8 : 8 + size]), fds


def _limit_threads(env: dict) -> None:
    """The job's thread count (Snakemake sets OMP_NUM_THREADS to the rule's threads) for torch and the
    BLAS pools, which read it when the server imported them."""
    n = env.get("OMP_NUM_THREADS")
    if not n or not n.isdigit():
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(int(n))
    threadpool_limits(int(n))


def _child(request: dict, fds: list[int], listener: socket.socket, conn: socket.socket) -> None:
    """In the forked child: become the job (its fds, directory, environment, arguments) and run it."""
    import atexit
    import signal

    listener.close()
    conn.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import tempfile

    tempfile.tempdir = None  # found again from the job's TMPDIR
    sys.argv = [sys.argv[0], *request["argv"]]
    code = 0
    try:
        _limit_threads(request["env"])
        from workflow.runner.run import run_stage

        run_stage(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # as the interpreter does: print it, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _reap(jobs: dict) -> None:
    """Tell each finished child's job its exit status."""
    while jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = jobs.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(f"exit {os.waitstatus_to_exitcode(status) % 256}\n".encode())
            conn.close()


def _abandoned(jobs: dict) -> None:
    """Kill the child of every job whose process is gone (its socket reads end-of-file)."""
    for pid, conn in list(jobs.items()):
        try:
            gone = conn.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        if gone:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def preload() -> None:
    """Import `PRELOAD` and the modeling code of every family of the family table (a library missing
    here is left to the job that needs it, which then reports it)."""
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in PRELOAD:
        module, _, attribute = name.partition(":")
        with contextlib.suppress(ImportError):
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
    from workflow.models.families import MODEL_TYPES

    for model_type in MODEL_TYPES:
        with contextlib.suppress(ImportError):
            importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    for name in [m for m in sys.modules if m.startswith("workflow.") and m != "workflow.runner.jobserver"]:
        del sys.modules[name]  # the workflow's own code is imported fresh by each job, as edited


def serve(path: Path) -> None:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped: leave through `finally`
    preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    listener.bind(str(tmp))
    listener.listen(64)
    os.replace(tmp, path)  # visible only once it listens
    listener.settimeout(0.05)
    jobs: dict[int, socket.socket] = {}
    idle = float(os.environ.get("WORKFLOW_JOB_SERVER_IDLE", IDLE_SECONDS))
    last = time.monotonic()
    print(f"{time.strftime('%F %T')} serving {path} (pid {os.getpid()})", flush=True)
    try:
        while jobs or time.monotonic() - last < idle:
            _reap(jobs)
            _abandoned(jobs)
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            conn.settimeout(10)
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            conn.setblocking(False)  # from here on only peeked for end-of-file, and told the exit status
            pid = os.fork()
            if pid == 0:
                _child(request, fds, listener, conn)
            for fd in fds:
                os.close(fd)
            jobs[pid] = conn
            with contextlib.suppress(OSError):
                conn.sendall(b"started\n")
            last = time.monotonic()
    finally:
        path.unlink(missing_ok=True)
        listener.close()
        for pid in jobs:  # stopped while jobs ran: they end too (each job then exits with status 1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        print(f"{time.strftime('%F %T')} idle for {idle:.0f} s: stopped", flush=True)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
