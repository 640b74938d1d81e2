"""Activation sets from one forward pass: stage `extract`'s capture and writing loop.

Every configured (site, layer) is captured in the same pass (`workflow.models.hooks.Capture`) and
appended to its own `workflow.store.activations.ActivationWriter`. Rows follow the tokens table
exactly: documents in table order, each document's tokens in position order, padding dropped.
Each set is written in a temporary folder that is renamed into place only when complete
(`workflow.store.files.atomic_dir`), so a killed job never leaves a set that looks finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from workflow import layout
from workflow.models.hooks import Capture
from workflow.models.sites import hook_name
from workflow.store.activations import ActivationWriter
from workflow.store.files import atomic_dir
from workflow.store.tokens import Documents, batches

log = logging.getLogger(__name__)

WINDOW_BATCHES = 16  # documents are length-sorted within windows of this many batches


def _windows(n_docs: int, size: int):
    """Consecutive document index ranges of at most `size`."""
    for start in range(0, n_docs, size):
        yield np.arange(start, min(start + size, n_docs))


def set_folder(out_root: str | Path, site: str, layer: int) -> Path:
    """Where the set of (site, layer) goes under an extract job's folder."""
    return Path(out_root) / layout.SET_SUBFOLDER.format(site=site, layer=layer)


def remove_unconfigured_sets(out_root: Path, targets: list[tuple[str, int]]) -> None:
    """Sets of sites or layers no longer in the config would outlive the tokens they index."""
    wanted = {set_folder(out_root, site, layer) for site, layer in targets}
    for folder in out_root.glob(layout.SET_SUBFOLDER.format(site="*", layer="*")):
        if folder.is_dir() and folder not in wanted:
            log.info("removing %s: no longer configured", folder)
            shutil.rmtree(folder)


def open_writers(
    stack, targets, out_root: str, meta: dict, tokens_path: str, d_model: int, dtype: str, shard_rows: int
) -> dict:
    """One writer per (site, layer), each in a temporary folder the stack (a `contextlib.ExitStack`)
    renames into place when it closes."""
    writers = {}
    for site, layer in targets:
        folder = stack.enter_context(atomic_dir(set_folder(out_root, site, layer)))
        where = {"site": site, "layer": layer, "hook_name": hook_name(site, layer), "tokens": str(tokens_path)}
        writers[(site, layer)] = ActivationWriter(folder, d_model, dtype, shard_rows, {**meta, **where})
    return writers


def stream(capture: Capture, docs: Documents, writers: dict, batch_size: int, pad_id: int, store_dtype, device) -> None:
    """Run every document through the model and append each (site, layer) to its writer, in table order."""
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        for window in _windows(len(docs.token_ids), batch_size * WINDOW_BATCHES):
            # run the window's documents sorted by length (little padding), write them in table order
            per_doc = {key: [None] * len(window) for key in writers}
            order = window[np.argsort([len(docs.token_ids[i]) for i in window], kind="stable")]
            for idx, inputs in batches(docs, batch_size, pad_id, order):
                inputs = {k: v.to(device) for k, v in inputs.items()}
                captured = capture.run(**inputs)
                lengths = inputs["attention_mask"].sum(1).tolist()
                for key in writers:
                    # cast on the device: half the bytes cross to the host in float16
                    acts = captured[key].to(store_dtype).cpu().numpy()  # (B, T, d_model)
                    for j, (i, n) in enumerate(zip(idx, lengths)):
                        per_doc[key][i - window[0]] = acts[j, :n]
            for key, writer in writers.items():
                writer.append(np.concatenate(per_doc[key]))  # (window tokens, d_model), table order
            done = int(docs.offsets[window[-1] + 1])
            log.info("%d/%d tokens, %.0f tokens/s", done, docs.n_tokens, done / (time.perf_counter() - started))
