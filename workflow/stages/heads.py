"""Stage `heads`: every attention head of one (model, variant, dataset): what it attends to and what ablating it costs.

On a seeded sample of `max_docs` test documents:

1. **Patterns** (eager attention, read by hooks; `workflow.analysis.attention`): per head the statistics
   and type; each head's mean output over the real tokens (what mean ablation writes); and the full
   attention of up to `pattern_docs` documents of at most `pattern_max_tokens` tokens, kept for the
   interactive view and for comparing the variants' patterns (where too few documents are that short,
   the shortest others are shown cut to their first `pattern_max_tokens` tokens: the full document's
   attention among those tokens, ``cut`` in patterns.json).
2. **Ablations** (`workflow.analysis.ablation`): each head zero- and mean-ablated before the output
   projection, one at a time. Measured on the variant's task classifier (fine-tuned: the fine-tuned
   model; pretrained: the pretrained body with a classifier fitted on its frozen features, stage
   `frozen_classifier`) as test cross-entropy and accuracy, and, for checkpoints with a causal
   language-model head (decoders), as next-token loss. A head is a query head: under grouped-query
   attention, ablating one leaves the key/value head it shares untouched. Masked-LM heads (encoders)
   are not ablated on their LM loss.

Outputs (in `--out-dir`):

- ``heads.parquet``: one row per (layer, head): the statistics and ``type``;
- ``ablation.parquet``: one row per (measure, mode, layer, head): ``loss`` (mean over documents, or
  over predicted tokens for ``lm``), ``accuracy`` (task only) and their change from the clean run,
  ``delta_loss`` and ``delta_accuracy`` (ablated minus clean);
- ``patterns.safetensors`` (``doc<id>``: float16 (layers, heads, T, T), rows are queries) and
  ``patterns.json`` (those documents' ids, labels and tokens, in order);
- ``heads.json``: clean metrics, type counts, thresholds, timings, device.

Layers are 1-based (block L), heads 0-based, as in the rest of the study.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import polars as pl

from workflow import layout
from workflow.analysis import ablation, attention
from workflow.models import loading
from workflow.models.families import family
from workflow.models.sources import resolve_source
from workflow.runner import cli
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import Documents, read_documents

log = logging.getLogger(__name__)


def _sample(tokens_path: str, cfg: dict, where: str) -> tuple[Documents, list, list[int]]:
    """The seeded sample of test documents (their first windows, where documents are windowed), their
    ids, and those kept for the stored patterns."""
    docs = read_documents(tokens_path).first_windows().sample(max_docs=cfg["max_docs"], seed=cfg["seed"])
    doc_ids = [int(d) for d in docs.doc_ids]
    shown = attention.pattern_docs(docs, cfg["pattern_docs"], cfg["pattern_max_tokens"])
    message = "%s: %d documents (%d tokens), %d kept for patterns, on %s"
    log.info(message, tokens_path, len(doc_ids), docs.n_tokens, len(shown), where)
    return docs, doc_ids, shown


@contextmanager
def _timer(seconds: dict, key: str):
    """The wall seconds of the block, to `seconds[key]` (heads.json) and the log."""
    t0 = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - t0
    log.info("%s: %.1f s", key, seconds[key])


def run(tokens_path: str, classifier_dir: str, lm: dict | None, family_name: str, cfg: dict, out_dir: str) -> dict:
    """`lm`: the variant's language model (`Plan.lm_spec`), or None; only a causal LM is ablated."""
    import torch

    started = time.perf_counter()
    unknown = [m for m in cfg["modes"] if m not in ablation.MODES]
    if unknown:
        raise ValueError(f"heads.modes: {unknown} unknown; known: {', '.join(ablation.MODES)}")
    torch.manual_seed(cfg["seed"])
    device = loading.pick_device()
    where = loading.describe_device(device)
    docs, doc_ids, shown = _sample(tokens_path, cfg, where)
    pad_id = loading.pad_token_id(classifier_dir)
    model = loading.load_classifier(classifier_dir, loading.num_labels(classifier_dir), pad_id, device).eval()
    seconds, modes = {}, list(cfg["modes"])
    with _timer(seconds, "patterns"):
        seen = attention.patterns_of(model, docs, family(family_name).causal, cfg, pad_id, device, shown)
    with _timer(seconds, "ablation_task"):
        rows, task = ablation.task_ablations(model, docs, modes, seen.means, cfg, pad_id, device)
    clean = {"task": task}
    del model  # the language model, where there is one, is loaded next
    lm = lm if lm and lm["kind"] == "causal" else None
    if lm:
        with _timer(seconds, "ablation_lm"):
            causal_lm = loading.load_lm(resolve_source(lm["source"]), device, lm["kind"], lm.get("body"))
            lm_rows, clean["lm"] = ablation.lm_ablations(causal_lm, docs, modes, cfg, pad_id, device)
        rows += lm_rows
    cap = cfg["pattern_max_tokens"]
    shown_meta = attention.pattern_examples(pl.read_parquet(tokens_path), docs, doc_ids, shown, cap)
    heads = attention.heads_table(seen.stats, seen.types)
    counts = heads["type"].value_counts(sort=True)
    summary = {
        "tokens": tokens_path,
        "classifier": classifier_dir,
        "lm": lm,
        "n_docs": len(doc_ids),
        "n_tokens": int(docs.n_tokens),
        "n_layers": int(seen.types.shape[0]),
        "n_heads": int(seen.types.shape[1]),
        "modes": modes,
        "clean": clean,
        "thresholds": seen.thresholds,
        "types": dict(zip(counts["type"].to_list(), counts["count"].to_list())),
        "pattern_docs": [m["doc_id"] for m in shown_meta],
        "device": where,
        "seconds": {**seconds, "total": time.perf_counter() - started},
    }
    write(out_dir, heads, rows, {f"doc{doc_ids[i]}": seen.patterns[i] for i in shown}, shown_meta, summary)
    log.info("%s: head types %s; %.1f s", out_dir, summary["types"], summary["seconds"]["total"])
    return summary


def write(
    out_dir: str, heads: pl.DataFrame, rows: list[dict], patterns: dict, shown: list[dict], summary: dict
) -> None:
    from safetensors.numpy import save_file

    names = layout.HEADS.names
    with atomic_dir(out_dir) as tmp:
        heads.write_parquet(tmp / names["heads"])
        pl.DataFrame(rows, schema_overrides={"accuracy": pl.Float64, "delta_accuracy": pl.Float64}).write_parquet(
            tmp / names["ablation"]
        )
        save_file(patterns, str(tmp / names["patterns"]))
        write_json(shown, tmp / names["examples"])
        write_json(summary, tmp / names["summary"])


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--tokens", required=True, help="tokens table of the test split")
    parser.add_argument("--classifier", required=True, help="task classifier folder of the variant")
    cli.add_lm(parser)
    parser.add_argument("--family", required=True, help="model family (workflow.models.families): causal or not")
    cli.add_config(parser, "heads config")
    parser.add_argument("--out-dir", required=True)
    cli.add_load(parser)
    args = cli.parse_model_job(parser, argv)
    run(args.tokens, args.classifier, args.lm, args.family, args.config, args.out_dir)
