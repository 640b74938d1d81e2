"""Stage `heads`: every attention head of one (model, variant, dataset): what it attends to and what ablating it costs.

On a seeded sample of `max_docs` test documents:

1. **Patterns** (eager attention, read by hooks): per head the statistics and
   type of `workflow.analysis.attention`; each head's mean output over the real tokens
   (what mean ablation writes); and the full attention of up to
   `pattern_docs` documents of at most `pattern_max_tokens` tokens, kept for
   the interactive view and for comparing the variants' patterns (where too few documents are
   that short, the shortest others are shown cut to their first `pattern_max_tokens` tokens:
   the full document's attention among those tokens, ``cut`` in patterns.json).
2. **Ablations** (`workflow.analysis.ablation`): each head zero- and mean-ablated before
   the output projection, one at a time. Measured on the variant's task
   classifier (fine-tuned: the fine-tuned model; pretrained: the pretrained
   body with a classifier fitted on its frozen features, stage `frozen_classifier`) as test cross-entropy
   and accuracy, and, for checkpoints with a causal language-model head
   (decoders), as next-token loss. A head is a query head: under grouped-query
   attention, ablating one leaves the key/value head it shares untouched.
   Masked-LM heads (encoders) are not ablated on their LM loss.

Outputs (in `--out-dir`):

- ``heads.parquet``: one row per (layer, head): the statistics and ``type``;
- ``ablation.parquet``: one row per (measure, mode, layer, head): ``loss``
  (mean over documents, or over predicted tokens for ``lm``), ``accuracy``
  (task only) and their change from the clean run, ``delta_loss`` and
  ``delta_accuracy`` (ablated minus clean);
- ``patterns.safetensors`` (``doc<id>``: float16 (layers, heads, T, T),
  rows are queries) and ``patterns.json`` (those documents' ids, labels and
  tokens, in order);
- ``heads.json``: clean metrics, type counts, thresholds, timings, device.

Layers are 1-based (block L), heads 0-based, as in the rest of the study.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis import ablation
from workflow.analysis.attention import DEFAULT_THRESHOLDS, STATS, AttentionWeights, PatternStats, head_types
from workflow.models import loading
from workflow.models.families import family, locate, n_heads
from workflow.models.sources import resolve_source
from workflow.runner import cli
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import Documents, batches, length_order, read_documents

log = logging.getLogger(__name__)


def attention_pass(
    model,
    docs: Documents,
    causal: bool,
    batch_size: int,
    pad_id: int,
    device,
    keep: set[int] = frozenset(),
    max_tokens: int | None = None,
) -> tuple[dict, list, dict[int, np.ndarray]]:
    """Statistics per head, each head's mean output per block, and the attention of documents `keep`
    (positions in `docs`) among their first `max_tokens` tokens (None: all) as float16 (blocks, heads,
    T, T). The model must run eager attention."""
    import torch

    base = model.base_model
    stats = PatternStats(len(locate(base).blocks), n_heads(model.config))
    patterns: dict[int, np.ndarray] = {}
    with (
        torch.inference_mode(),
        AttentionWeights(base) as attn,
        ablation.HeadMeans(base, n_heads(model.config)) as means,
    ):
        for idx, inputs in batches(docs, batch_size, pad_id, length_order(docs)):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            mask = inputs["attention_mask"]
            special = torch.zeros_like(mask, dtype=torch.bool)
            for j, i in enumerate(idx):
                special[j, : len(docs.special[i])] = torch.from_numpy(docs.special[i].astype(bool))
            means.mask = mask
            model(**inputs)
            means.update_count()
            for block, weights in enumerate(attn.weights):
                stats.update(block, weights, mask, special, causal)
            for j, i in enumerate(idx):
                if int(i) in keep:
                    n = min(len(docs.token_ids[i]), max_tokens or len(docs.token_ids[i]))
                    patterns[int(i)] = (
                        torch.stack([w[j, :, :n, :n] for w in attn.weights]).to(torch.float16).cpu().numpy()
                    )
    return stats.result(), means.means(), patterns


def ablation_rows(measure: str, modes: list[str], clean: np.ndarray, ablated: np.ndarray, n: float) -> list[dict]:
    """Long rows of `ablation.parquet` from the sums of `head_effects` (n: documents or tokens)."""
    clean_loss = clean[0] / n
    clean_acc = clean[1] / n if measure == "task" else None
    rows = []
    for m, mode in enumerate(modes):
        for block in range(ablated.shape[1]):
            for head in range(ablated.shape[2]):
                loss = ablated[m, block, head, 0] / n
                acc = ablated[m, block, head, 1] / n if measure == "task" else None
                rows.append(
                    {
                        "measure": measure,
                        "mode": mode,
                        "layer": block + 1,
                        "head": head,
                        "loss": float(loss),
                        "delta_loss": float(loss - clean_loss),
                        "accuracy": None if acc is None else float(acc),
                        "delta_accuracy": None if acc is None else float(acc - clean_acc),
                    }
                )
    return rows


def _pattern_docs(docs: Documents, limit: int, max_tokens: int) -> list[int]:
    """The first `limit` documents (table order) of at most `max_tokens` tokens; where fewer are that
    short, then the shortest of the others (stored cut to `max_tokens`), so the view is never empty."""
    lengths = [len(ids) for ids in docs.token_ids]
    short = [i for i, n in enumerate(lengths) if n <= max_tokens]
    long = sorted((i for i, n in enumerate(lengths) if n > max_tokens), key=lambda i: (lengths[i], i))
    return (short + long)[:limit]


def _doc_tokens(tokens_path: str, doc_ids: list) -> dict:
    table = pl.read_parquet(tokens_path).filter(pl.col("doc_id").is_in(doc_ids))
    table = table.filter(pl.col("window") == 0) if "window" in table.columns else table
    return {d: g["token"].to_list() for (d,), g in table.group_by("doc_id", maintain_order=True)}


def _shown_meta(tokens_path: str, docs: Documents, doc_ids: list, shown: list[int], cap: int) -> list[dict]:
    """patterns.json: each stored document's id, label and tokens (cut to `cap`, and marked so)."""
    tokens = _doc_tokens(tokens_path, [doc_ids[i] for i in shown])
    meta = [
        {
            "doc_id": doc_ids[i],
            "label": int(docs.labels[i]),
            "tokens": tokens[doc_ids[i]][:cap],
            "cut": len(tokens[doc_ids[i]]) > cap,
        }
        for i in shown
    ]
    if any(m["cut"] for m in meta):
        log.info(
            "%d of the %d pattern documents are longer than %d tokens: shown cut",
            sum(m["cut"] for m in meta),
            len(meta),
            cap,
        )
    return meta


def _sample(tokens_path: str, cfg: dict) -> tuple[Documents, list, list[int]]:
    """The seeded sample of test documents (their first windows, where documents are windowed), their
    ids, and those kept for the stored patterns."""
    docs = read_documents(tokens_path).first_windows().sample(max_docs=cfg["max_docs"], seed=cfg["seed"])
    doc_ids = [int(d) for d in docs.doc_ids]
    return docs, doc_ids, _pattern_docs(docs, cfg["pattern_docs"], cfg["pattern_max_tokens"])


def _progress(measure: str):
    return lambda message: log.info("%s ablations: %s", measure, message)


def task_ablations(model, docs: Documents, modes: list, means, cfg: dict, pad_id: int, device) -> tuple[list, dict]:
    """Every head ablated on the variant's task classifier: long rows and the clean metrics."""
    clean, ablated = ablation.head_effects(
        model,
        docs,
        ablation.task_measure,
        modes,
        means,
        cfg["batch_size"],
        cfg["max_rows"],
        pad_id,
        device,
        _progress("task"),
    )
    n = len(docs.labels)
    return ablation_rows("task", modes, clean, ablated, n), {
        "loss": float(clean[0] / n),
        "accuracy": float(clean[1] / n),
    }


def lm_ablations(spec: dict, docs: Documents, modes: list, cfg: dict, pad_id: int, device) -> tuple[list, dict]:
    """Every head ablated on the variant's causal LM (next-token loss); `spec`: `Plan.lm_spec`."""
    lm = loading.load_lm(resolve_source(spec["source"]), device, spec["kind"], spec.get("body"))
    means = ablation.head_means(lm, docs, cfg["batch_size"], pad_id, device) if "mean" in modes else None
    clean, ablated = ablation.head_effects(
        lm, docs, ablation.lm_measure, modes, means, cfg["batch_size"], cfg["max_rows"], pad_id, device, _progress("lm")
    )
    n = max(clean[1], 1)
    return ablation_rows("lm", modes, clean, ablated, n), {"loss": float(clean[0] / n), "tokens": int(clean[1])}


def heads_table(stats: dict, types: np.ndarray) -> pl.DataFrame:
    n_blocks, n = types.shape
    return pl.DataFrame(
        {
            "layer": np.repeat(np.arange(1, n_blocks + 1), n),
            "head": np.tile(np.arange(n), n_blocks),
            **{name: stats[name].reshape(-1) for name in STATS},
            "type": types.reshape(-1).tolist(),
        }
    ).with_columns(pl.col(name).fill_nan(None) for name in STATS)


def _classifier(classifier_dir: str, device):
    pad_id = loading.pad_token_id(classifier_dir)
    return loading.load_classifier(classifier_dir, loading.num_labels(classifier_dir), pad_id, device).eval(), pad_id


@dataclass
class Seen:
    """What one attention pass over the documents saw."""

    stats: dict  # statistic name -> (blocks, heads) means
    means: list  # per block, each head's mean output (what mean ablation writes)
    patterns: dict  # document position -> float16 (blocks, heads, T, T) attention
    thresholds: dict  # the head type thresholds used
    types: np.ndarray  # (blocks, heads) head type names


def patterns_of(model, docs: Documents, family_name: str, cfg: dict, pad_id: int, device, shown: list[int]) -> Seen:
    """Pattern statistics, head types, mean head outputs and the stored patterns (eager attention)."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    causal = family(family_name).causal
    stats, means, patterns = attention_pass(
        model, docs, causal, cfg["batch_size"], pad_id, device, set(shown), cfg["pattern_max_tokens"]
    )
    model.set_attn_implementation(implementation)
    thresholds = {**DEFAULT_THRESHOLDS, **cfg["types"]}
    return Seen(stats, means, patterns, thresholds, head_types(stats, thresholds))


def task_part(model, docs: Documents, means, cfg: dict, pad_id: int, device, seconds: dict) -> tuple[list, dict]:
    """Every head ablated on the task classifier: rows and clean metrics."""
    t0 = time.perf_counter()
    rows, clean = task_ablations(model, docs, list(cfg["modes"]), means, cfg, pad_id, device)
    seconds["ablation_task"] = time.perf_counter() - t0
    log.info(
        "task: clean loss %.4f, accuracy %.3f; every head x %d modes ablated in %.1f s",
        clean["loss"],
        clean["accuracy"],
        len(cfg["modes"]),
        seconds["ablation_task"],
    )
    return rows, {"task": clean}


def lm_part(spec: dict, docs: Documents, cfg: dict, pad_id: int, device, seconds: dict) -> tuple[list, dict]:
    """Every head ablated on the variant's language model: rows and clean metrics."""
    t0 = time.perf_counter()
    rows, clean = lm_ablations(spec, docs, list(cfg["modes"]), cfg, pad_id, device)
    seconds["ablation_lm"] = time.perf_counter() - t0
    log.info(
        "lm: clean loss %.4f over %d tokens, ablated in %.1f s", clean["loss"], clean["tokens"], seconds["ablation_lm"]
    )
    return rows, clean


def run(tokens_path: str, classifier_dir: str, lm: dict | None, family_name: str, cfg: dict, out_dir: str) -> dict:
    """`lm`: the variant's language model (`Plan.lm_spec`), or None; only a causal LM is ablated."""
    import torch

    started = time.perf_counter()
    unknown = [m for m in cfg["modes"] if m not in ablation.MODES]
    if unknown:
        raise ValueError(f"heads.modes: {unknown} unknown; known: {', '.join(ablation.MODES)}")
    torch.manual_seed(cfg["seed"])
    device = loading.pick_device()
    docs, doc_ids, shown = _sample(tokens_path, cfg)
    log.info(
        "%s: %d documents (%d tokens), %d kept for patterns, on %s",
        tokens_path,
        len(doc_ids),
        docs.n_tokens,
        len(shown),
        loading.describe_device(device),
    )
    model, pad_id = _classifier(classifier_dir, device)
    t0 = time.perf_counter()
    seen = patterns_of(model, docs, family_name, cfg, pad_id, device, shown)
    seconds = {"patterns": time.perf_counter() - t0}
    rows, clean = task_part(model, docs, seen.means, cfg, pad_id, device, seconds)
    del model  # the language model, where there is one, is loaded next
    lm = lm if lm and lm["kind"] == "causal" else None
    if lm:
        lm_rows, clean["lm"] = lm_part(lm, docs, cfg, pad_id, device, seconds)
        rows += lm_rows
    shown_meta = _shown_meta(tokens_path, docs, doc_ids, shown, cfg["pattern_max_tokens"])
    heads = heads_table(seen.stats, seen.types)
    counts = heads["type"].value_counts(sort=True)
    summary = {
        "tokens": tokens_path,
        "classifier": classifier_dir,
        "lm": lm,
        "n_docs": len(doc_ids),
        "n_tokens": int(docs.n_tokens),
        "n_layers": int(seen.types.shape[0]),
        "n_heads": int(seen.types.shape[1]),
        "modes": list(cfg["modes"]),
        "clean": clean,
        "thresholds": seen.thresholds,
        "types": dict(zip(counts["type"].to_list(), counts["count"].to_list())),
        "pattern_docs": [m["doc_id"] for m in shown_meta],
        "device": loading.describe_device(device),
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
    parser.add_argument(
        "--family", required=True, help="model family (workflow.models.families): whether attention is causal"
    )
    cli.add_config(parser, "heads config")
    parser.add_argument("--out-dir", required=True)
    cli.add_load(parser)
    args = cli.parse_model_job(parser, argv)
    run(args.tokens, args.classifier, args.lm, args.family, args.config, args.out_dir)
