"""Stage `extract`: activation sets of one (model, variant, dataset, split).

One forward pass over the tokens table writes every configured (site, layer)
and stops after the deepest block needed (`workflow.models.hooks.Capture`).
Rows follow the tokens table exactly: documents in table order, each
document's tokens in position order, padding dropped. Each set is built in a
temporary folder and renamed into place only when complete
(`workflow.store.files.atomic_dir`), so a killed job never leaves a set that
looks finished. extract.json, written last, records the job's (model,
variant, dataset, split) and its sets.

Variants: ``pretrained`` is the model as loaded from its source;
``finetuned`` is the body of the fine-tuned classifier.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from workflow import layout
from workflow.models import loading
from workflow.models.hooks import Capture
from workflow.models.sites import hook_name
from workflow.models.sources import resolve_source
from workflow.runner import cli
from workflow.store.activations import ActivationWriter
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import Documents, batches, read_documents

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
    return Path(out_root) / layout.SET_SUBFOLDER.format(site=site, layer=layer)


def _remove_unconfigured_sets(out_root: Path, targets: list[tuple[str, int]]) -> None:
    """Sets of sites or layers no longer in the config would outlive the tokens they index."""
    wanted = {set_folder(out_root, site, layer) for site, layer in targets}
    for folder in out_root.glob(layout.SET_SUBFOLDER.format(site="*", layer="*")):
        if folder.is_dir() and folder not in wanted:
            log.info("removing %s: no longer configured", folder)
            shutil.rmtree(folder)


def _stream(
    capture: Capture, docs: Documents, writers: dict, batch_size: int, pad_id: int, store_dtype, device
) -> None:
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


def _load(model_dir: str, compute_dtype: str, device):
    """The variant's body on `device` in its compute dtype, and its padding id."""
    import torch

    source = resolve_source(model_dir)
    model = loading.load_base_model(source, device)
    if compute_dtype != "float32":
        model = model.to(getattr(torch, compute_dtype))
    return model, loading.load_tokenizer(source).pad_token_id


def _writers(stack, targets, out_root: str, meta: dict, tokens_path: str, d_model: int, dtype: str, shard_rows: int):
    """One writer per (site, layer), each in a temporary folder the stack renames into place when it closes."""
    writers = {}
    for site, layer in targets:
        folder = stack.enter_context(atomic_dir(set_folder(out_root, site, layer)))
        where = {"site": site, "layer": layer, "hook_name": hook_name(site, layer), "tokens": str(tokens_path)}
        writers[(site, layer)] = ActivationWriter(folder, d_model, dtype, shard_rows, {**meta, **where})
    return writers


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
    """Write one activation set per (site, layer) under `out_root`/{site}/L{layer}; return the job's summary."""
    import torch

    _remove_unconfigured_sets(Path(out_root), targets)
    device = loading.pick_device()
    model, pad_id = _load(model_dir, compute_dtype, device)
    docs = read_documents(tokens_path)
    sets = ", ".join(f"{s}:L{l}" for s, l in targets)
    log.info(
        "device: %s; %s %s on %s: %d docs, %d tokens -> %s (compute %s, stored %s)",
        loading.describe_device(device),
        meta.get("model"),
        meta.get("variant"),
        tokens_path,
        len(docs.token_ids),
        docs.n_tokens,
        sets,
        compute_dtype,
        dtype,
    )
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        writers = _writers(stack, targets, out_root, meta, tokens_path, model.config.hidden_size, dtype, shard_rows)
        capture = stack.enter_context(Capture(model, targets, stop=True))
        _stream(capture, docs, writers, batch_size, pad_id, getattr(torch, dtype), device)
        for writer in writers.values():
            if writer.close()["n_rows"] != docs.n_tokens:  # inside the stack: a mismatch is never renamed into place
                raise RuntimeError(f"wrote {writer.n_rows} rows but the tokens table has {docs.n_tokens}")
    seconds = time.perf_counter() - started
    rate = docs.n_tokens / seconds
    log.info("done: %d tokens x %d sets in %.1f s (%.0f tokens/s)", docs.n_tokens, len(targets), seconds, rate)
    return {
        **meta,
        "device": loading.describe_device(device),
        "n_tokens": docs.n_tokens,
        "sets": [layout.SET_SUBFOLDER.format(site=s, layer=l) for s, l in targets],
        "seconds": seconds,
        "tokens_per_s": rate,
    }


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--model", required=True, help="model folder or source of this variant")
    parser.add_argument("--tokens", required=True, help="tokens table of the split")
    parser.add_argument("--targets", nargs="+", required=True, help="site:layer pairs, e.g. resid_post:2")
    parser.add_argument("--out-root", required=True, help="sets go to OUT_ROOT/{site}/L{layer}")
    cli.add_config(parser, "job's model, variant, dataset and split, merged into each manifest", "--meta")
    cli.add_config(parser, "extract config")
    parser.add_argument("--summary", help="write the run summary (JSON) here, last")
    cli.add_load(parser)
    args = cli.parse_model_job(parser, argv)
    cfg = args.config
    summary = run(
        args.model,
        args.tokens,
        parse_targets(args.targets),
        args.out_root,
        args.meta,
        batch_size=cfg["batch_size"],
        dtype=cfg["dtype"],
        shard_rows=cfg["shard_rows"],
        compute_dtype=cfg["compute_dtype"],
    )
    if args.summary:
        write_json(summary, args.summary)
