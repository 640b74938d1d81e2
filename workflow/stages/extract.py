"""Stage `extract`: activation sets of one (model, variant, dataset, split).

One forward pass over the tokens table writes every configured (site, layer)
and stops after the deepest block needed (`workflow.models.hooks.Capture`).
Rows follow the tokens table exactly: documents in table order, each
document's tokens in position order, padding dropped. Each set is built in a
temporary folder and renamed into place only when complete
(`workflow.store.files.atomic_dir`), so a killed job never leaves a set that
looks finished; the loop that captures and writes is `workflow.models.extraction`.
extract.json, written last, records the job's (model, variant, dataset, split) and its sets.

Variants: ``pretrained`` is the model as loaded from its source;
``finetuned`` is the body of the fine-tuned classifier.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from workflow import layout
from workflow.models import loading
from workflow.models.extraction import open_writers, remove_unconfigured_sets, stream
from workflow.models.hooks import Capture
from workflow.models.sources import resolve_source
from workflow.runner import cli
from workflow.store.files import write_json
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


def _load(model_dir: str, compute_dtype: str, device):
    """The variant's body on `device` in its compute dtype, and its padding id."""
    import torch

    source = resolve_source(model_dir)
    model = loading.load_base_model(source, device)
    if compute_dtype != "float32":
        model = model.to(getattr(torch, compute_dtype))
    return model, loading.load_tokenizer(source).pad_token_id


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

    remove_unconfigured_sets(Path(out_root), targets)
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
        writers = open_writers(stack, targets, out_root, meta, tokens_path, model.config.hidden_size, dtype, shard_rows)
        capture = stack.enter_context(Capture(model, targets, stop=True))
        stream(capture, docs, writers, batch_size, pad_id, getattr(torch, dtype), device)
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
        [(t.site, t.layer) for t in map(layout.Target.parse, args.targets)],
        args.out_root,
        args.meta,
        batch_size=cfg["batch_size"],
        dtype=cfg["dtype"],
        shard_rows=cfg["shard_rows"],
        compute_dtype=cfg["compute_dtype"],
    )
    if args.summary:
        write_json(summary, args.summary)
