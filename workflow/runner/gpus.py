"""Giving each concurrent GPU job its own card on one machine.

Locally, ``snakemake --resources gpu=N`` only caps how many GPU jobs run at
once; it never says which card a job should use, so without help every job
would start on card 0. Each GPU stage therefore claims a card before torch
starts CUDA (`claim`, called by ``python -m workflow <stage>``):

- the pool is ``STUDY_GPUS`` (comma-separated ids; a fake pool for tests),
  else the cards ``CUDA_VISIBLE_DEVICES`` already limits the run to, else the
  machine's cards (/proc/driver/nvidia/gpus, or ``nvidia-smi -L``); no cards,
  no claim;
- a card is held by an exclusive ``flock`` on ``<lock dir>/gpu<id>.lock``
  (lock dir: ``STUDY_GPU_LOCKS``, default ``/tmp/study-gpu-locks-<uid>``). The
  kernel drops the lock when the process ends, however it ends, so a crashed
  or killed job never keeps its card, and two jobs can never hold one card;
- the claim takes the first free card, waits if all are taken, sets
  ``CUDA_VISIBLE_DEVICES`` to it and logs which card it is;
- inside a SLURM job nothing is claimed: SLURM already gave the job its own
  cards (``--gpus``), and card ids there are local to the job.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

_held: list = []  # open lock files of this process: closing them frees the card


def pool() -> list[str]:
    """Card ids of this machine (or of the fake pool in STUDY_GPUS)."""
    for name in ("STUDY_GPUS", "CUDA_VISIBLE_DEVICES"):
        given = os.environ.get(name)
        if given is not None:
            return [c.strip() for c in given.split(",") if c.strip()]
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return [str(i) for i in range(len(list(proc.iterdir())))]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in listing.splitlines() if l.startswith("GPU "))]


def lock_dir() -> Path:
    return Path(os.environ.get("STUDY_GPU_LOCKS") or f"/tmp/study-gpu-locks-{os.getuid()}")


def _try(card: str, folder: Path):
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in card)
    handle = open(folder / f"gpu{safe}.lock", "a+")  # noqa: SIM115 (held open: the lock lasts as long as the file)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def claim(poll_seconds: float = 0.5) -> str | None:
    """Claim a free card for the rest of this process; return its id (None: no cards, or already chosen)."""
    if os.environ.get("SLURM_JOB_ID") and "STUDY_GPUS" not in os.environ:
        log.info(
            "GPU: SLURM job %s; using the cards SLURM gave it (CUDA_VISIBLE_DEVICES=%r)",
            os.environ["SLURM_JOB_ID"],
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        return None
    cards = pool()
    if not cards:
        return None
    folder = lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    waited, last_note = 0.0, 0.0
    while True:
        for card in cards:
            handle = _try(card, folder)
            if handle is not None:
                _held.append(handle)
                os.environ["CUDA_VISIBLE_DEVICES"] = card
                log.info(
                    "GPU: claimed card %s at %s (CUDA_VISIBLE_DEVICES=%s, lock %s/gpu%s.lock)",
                    card,
                    _now(),
                    card,
                    folder,
                    card,
                )
                atexit.register(_release, card)
                return card
        if waited - last_note >= 60 or waited == 0:
            log.info("GPU: all %d cards (%s) are held by other jobs; waiting", len(cards), ",".join(cards))
            last_note = waited
        time.sleep(poll_seconds)
        waited += poll_seconds


def _now() -> str:
    return datetime.now().isoformat(timespec="microseconds")


def _release(card: str) -> None:
    log.info("GPU: released card %s at %s", card, _now())
    while _held:
        _held.pop().close()
