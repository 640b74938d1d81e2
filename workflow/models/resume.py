"""Resumable training of a model: the state a killed fine-tuning job needs to end where an
uninterrupted one ends.

`TrainingState` holds what changes as training goes (trainable weights, optimizer, schedule,
the epoch's document order and position, the step, tokens and seconds so far) and every random
generator that decides a step (torch's, CUDA's, the data order's and the loss's own, such as
the masked-LM collator's). `Checkpoint` saves it atomically and restores it only when the
fingerprint (model source, data, config, code) matches.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from workflow.store.files import atomic_path

log = logging.getLogger(__name__)


def fingerprint(data_file: str | Path, *keys) -> str:
    """A checkpoint's key: the data file's bytes and `keys` (JSON-able: source, config, code)."""
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode())
    digest.update(Path(data_file).read_bytes())
    return digest.hexdigest()


def folder_listing(source: str) -> list:
    """(name, bytes, mtime) of every file of a local model folder (empty for a hub id): a replaced
    model changes a checkpoint's fingerprint, without reading its weights."""
    folder = Path(source)
    if not folder.is_dir():
        return []
    return sorted(
        [str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in folder.rglob("*") if p.is_file()
    )


class TrainingState:
    """The mutable state of one training run, over `named` trainable parameters."""

    def __init__(self, named, optimizer, schedule, seed: int, loss_of):
        self.named, self.optimizer, self.schedule, self.loss_of = named, optimizer, schedule, loss_of
        self.rng = np.random.default_rng(seed)
        self.step, self.tokens, self.seconds, self.epoch, self.order = 0, 0, 0.0, 0, None

    def _random(self) -> dict:
        import torch

        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        if getattr(self.loss_of, "generator", None) is not None:
            state["loss"] = self.loss_of.generator.get_state()
        return state

    def _set_random(self, state: dict) -> None:
        import torch

        torch.set_rng_state(state["torch"].cpu())
        if "cuda" in state:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        if "loss" in state:
            self.loss_of.generator.set_state(state["loss"].cpu())

    def as_dict(self, epoch_done: bool, seconds: float) -> dict:
        """The state after the current step; `epoch_done`: the next step starts a new epoch (which
        draws its order afresh)."""
        return {
            "params": {n: p.detach() for n, p in self.named},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "numpy": self.rng.bit_generator.state,
            "random": self._random(),
            "step": self.step,
            "tokens": self.tokens,
            "seconds": self.seconds + seconds,
            "epoch": self.epoch + epoch_done,
            "order": None if epoch_done else self.order,
        }

    def load(self, saved: dict) -> None:
        import torch

        with torch.no_grad():
            for n, p in self.named:
                p.copy_(saved["params"][n])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        self.rng.bit_generator.state = saved["numpy"]
        self._set_random(saved["random"])
        self.step, self.tokens, self.seconds = saved["step"], saved["tokens"], saved["seconds"]
        self.epoch, self.order = saved["epoch"], saved["order"]


class Checkpoint:
    """Where a run's `TrainingState` is saved every `every` steps (`path` None: never)."""

    def __init__(self, path, fingerprint: str = "", every: int = 0):
        self.path, self.fingerprint, self.every = (Path(path) if path else None), fingerprint, every

    def due(self, step: int, total: int) -> bool:
        return self.path is not None and step % self.every == 0 and step < total

    def save(self, state: TrainingState, epoch_done: bool, seconds: float) -> None:
        import torch

        with atomic_path(self.path) as tmp:
            torch.save({"fingerprint": self.fingerprint, **state.as_dict(epoch_done, seconds)}, tmp)

    def restore(self, state: TrainingState, device, total: int) -> bool:
        """Load the saved state into `state` if there is one of this run; says so in the log."""
        import torch

        if self.path is None or not self.path.exists():
            return False
        saved = torch.load(self.path, map_location=device, weights_only=False)
        if saved.get("fingerprint") != self.fingerprint:
            log.info("ignoring %s: written for another model, data set, config or code version", self.path)
            return False
        state.load(saved)
        log.info("resuming from %s at step %d/%d (epoch %d)", self.path, state.step, total, state.epoch + 1)
        return True
