"""Stage `extract`: activation sets of one (model, variant, dataset, split).

One forward pass over the tokens table writes every configured (site, layer)
and stops after the deepest block needed (`models.Capture`). Rows follow the
tokens table exactly: documents in table order, each document's tokens in
position order, padding dropped. Each set is built in a temporary folder and
renamed into place only when complete (`io.atomic_dir`), so a killed job never
leaves a set that looks finished.

Variants: ``pretrained`` is the model as loaded from its source;
``finetuned`` is the body of the fine-tuned classifier.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from workflow import io, models
from workflow.tokenize import batches, read_documents

log = logging.getLogger(__name__)

WINDOW_BATCHES = 16  # documents are length-sorted within windows of this many batches


def _windows(n_docs: int, size: int):
    """Consecutive document index ranges of at most `size`."""
    for start in range(0, n_docs, size):
        yield np.arange(start, min(start + size, n_docs))


def parse_targets(pairs: list[str]) -> list[tuple[str, int]]:
    """["resid_post:2", ...] -> [("resid_post", 2), ...]"""
    out = []
    for pair in pairs:
        site, _, layer = pair.partition(":")
        out.append((site, int(layer)))
    return out


def set_folder(out_root: str | Path, site: str, layer: int) -> Path:
    return Path(out_root) / site / f"L{layer}"


def _remove_unconfigured_sets(out_root: Path, targets: list[tuple[str, int]]) -> None:
    """Sets of sites or layers no longer in the config would outlive the tokens they index."""
    wanted = {set_folder(out_root, site, layer) for site, layer in targets}
    for folder in out_root.glob("*/L*"):
        if folder.is_dir() and folder not in wanted:
            log.info("removing %s: no longer configured", folder)
            shutil.rmtree(folder)


def run(
    model_dir: str,
    tokens_path: str,
    targets: list[tuple[str, int]],
    out_root: str,
    meta: dict,
    batch_size: int = 32,
    dtype: str = "float16",
    shard_rows: int = 65536,
    compute_dtype: str = "float32",
) -> dict:
    """Write one activation set per (site, layer) under `out_root`/{site}/L{layer}."""
    import torch

    _remove_unconfigured_sets(Path(out_root), targets)
    device = models.pick_device()
    source = models.resolve_source(model_dir)
    model = models.load_base_model(source, device)
    if compute_dtype != "float32":
        model = model.to(getattr(torch, compute_dtype))
    docs = read_documents(tokens_path)
    pad_id = models.load_tokenizer(source).pad_token_id
    d_model = model.config.hidden_size
    store_dtype = getattr(torch, dtype)
    log.info("device: %s; %s %s on %s: %d docs, %d tokens -> %s (compute %s, stored %s)",
             models.describe_device(device), meta.get("model"), meta.get("variant"), tokens_path,
             len(docs.token_ids), docs.n_tokens, ", ".join(f"{s}:L{l}" for s, l in targets), compute_dtype, dtype)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = {}
        for site, layer in targets:
            folder = stack.enter_context(io.atomic_dir(set_folder(out_root, site, layer)))
            set_meta = {**meta, "site": site, "layer": layer, "hook_name": models.hook_name(site, layer),
                        "tokens": str(tokens_path)}
            writers[(site, layer)] = io.ActivationWriter(folder, d_model, dtype, shard_rows, set_meta)
        capture = stack.enter_context(models.Capture(model, targets, stop=True))
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
                rate = done / (time.perf_counter() - started)
                log.info("%d/%d tokens, %.0f tokens/s", done, docs.n_tokens, rate)
        for writer in writers.values():
            if writer.close()["n_rows"] != docs.n_tokens:  # inside the stack: a mismatch is never renamed into place
                raise RuntimeError(f"wrote {writer.n_rows} rows but the tokens table has {docs.n_tokens}")
    seconds = time.perf_counter() - started
    log.info("done: %d tokens x %d sets in %.1f s (%.0f tokens/s)", docs.n_tokens, len(targets), seconds,
             docs.n_tokens / seconds)
    return {"device": models.describe_device(device), "n_tokens": docs.n_tokens, "sets": [f"{s}/L{l}" for s, l in targets],
            "seconds": seconds, "tokens_per_s": docs.n_tokens / seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow extract", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or source of this variant")
    parser.add_argument("--tokens", required=True, help="tokens table of the split")
    parser.add_argument("--targets", nargs="+", required=True, help="site:layer pairs, e.g. resid_post:2")
    parser.add_argument("--out-root", required=True, help="sets go to OUT_ROOT/{site}/L{layer}")
    parser.add_argument("--meta", required=True, help="JSON merged into each manifest (model, variant, ...)")
    parser.add_argument("--config", required=True, help="the extract config as JSON")
    parser.add_argument("--summary", help="write the run summary (JSON) here, last")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config)
    summary = run(args.model, args.tokens, parse_targets(args.targets), args.out_root, json.loads(args.meta),
        batch_size=cfg["batch_size"], dtype=cfg["dtype"], shard_rows=cfg["shard_rows"],
        compute_dtype=cfg["compute_dtype"])
    if args.summary:
        io.write_json(summary, args.summary)
