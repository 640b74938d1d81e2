"""Stage `heads`: every attention head of one (model, variant, dataset): what it attends to and what ablating it costs.

On a seeded sample of `max_docs` test documents:

1. **Patterns** (eager attention, read by hooks): per head the statistics and
   type of `attention_stats`; each head's mean output over the real tokens
   (what mean ablation writes); and the full attention of up to
   `pattern_docs` documents of at most `pattern_max_tokens` tokens, kept for
   the interactive view and for comparing the variants' patterns.
2. **Ablations** (`head_ablation`): each head zero- and mean-ablated before
   the output projection, one at a time. Measured on the variant's task
   classifier (fine-tuned: the fine-tuned model; pretrained: the pretrained
   body with its fitted linear head, stage `linear_head`) as test cross-entropy
   and accuracy, and, for models with a language-model head (GPT-2), as
   next-token loss.

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

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import head_ablation, io, models
from workflow.attention_stats import DEFAULT_THRESHOLDS, STATS, AttentionWeights, PatternStats, head_types
from workflow.tokenize import Documents, batches, read_documents

log = logging.getLogger(__name__)

CAUSAL_FAMILIES = {"gpt2"}


def attention_pass(model, docs: Documents, causal: bool, batch_size: int, pad_id: int, device,
                   keep: set[int] = frozenset()) -> tuple[dict, list, dict[int, np.ndarray]]:
    """Statistics per head, each head's mean output per block, and the attention of documents `keep`
    (positions in `docs`) as float16 (blocks, heads, T, T). The model must run eager attention."""
    import torch

    base = model.base_model
    n_blocks, n_heads = len(models.locate(base).blocks), models.n_heads(model.config)
    stats = PatternStats(n_blocks, n_heads)
    patterns: dict[int, np.ndarray] = {}
    order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
    with torch.inference_mode(), AttentionWeights(base) as attn, head_ablation.HeadMeans(base, n_heads) as means:
        for idx, inputs in batches(docs, batch_size, pad_id, order):
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
                    n = len(docs.token_ids[i])
                    patterns[int(i)] = torch.stack([w[j, :, :n, :n] for w in attn.weights]).to(torch.float16).cpu().numpy()
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
                rows.append({"measure": measure, "mode": mode, "layer": block + 1, "head": head,
                             "loss": float(loss), "delta_loss": float(loss - clean_loss),
                             "accuracy": None if acc is None else float(acc),
                             "delta_accuracy": None if acc is None else float(acc - clean_acc)})
    return rows


def _pattern_docs(docs: Documents, limit: int, max_tokens: int) -> list[int]:
    """The first `limit` documents (table order) of at most `max_tokens` tokens."""
    short = [i for i, ids in enumerate(docs.token_ids) if len(ids) <= max_tokens]
    return short[:limit]


def _doc_tokens(tokens_path: str, doc_ids: list) -> dict:
    table = pl.read_parquet(tokens_path, columns=["doc_id", "token"]).filter(pl.col("doc_id").is_in(doc_ids))
    return {d: g["token"].to_list() for (d,), g in table.group_by("doc_id", maintain_order=True)}


def run(tokens_path: str, classifier_dir: str, lm_source: str | None, family: str, cfg: dict, out_dir: str) -> dict:
    import torch
    from safetensors.numpy import save_file

    started = time.perf_counter()
    modes = list(cfg["modes"])
    unknown = [m for m in modes if m not in head_ablation.MODES]
    if unknown:
        raise ValueError(f"heads.modes: {unknown} unknown; known: {', '.join(head_ablation.MODES)}")
    torch.manual_seed(cfg["seed"])
    device = models.pick_device()
    every = read_documents(tokens_path)
    keep = np.sort(np.random.default_rng(cfg["seed"]).permutation(len(every.token_ids))[: cfg["max_docs"]])
    docs = every.subset(keep)
    all_ids = pl.read_parquet(tokens_path, columns=["doc_id"])["doc_id"].unique(maintain_order=True).to_list()
    doc_ids = [all_ids[i] for i in keep]
    shown = _pattern_docs(docs, cfg["pattern_docs"], cfg["pattern_max_tokens"])
    log.info("%s: %d documents (%d tokens), %d kept for patterns, on %s", tokens_path, len(keep), docs.n_tokens,
             len(shown), models.describe_device(device))

    pad_id = models.pad_token_id(classifier_dir)
    n_labels = len(json.loads((Path(classifier_dir) / "config.json").read_text())["id2label"])
    model = models.load_classifier(classifier_dir, n_labels, pad_id, device).eval()
    n_blocks, n_heads = len(models.locate(model.base_model).blocks), models.n_heads(model.config)
    seconds = {}

    t0 = time.perf_counter()
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    stats, means, patterns = attention_pass(model, docs, family in CAUSAL_FAMILIES, cfg["batch_size"], pad_id, device,
                                            set(shown))
    model.set_attn_implementation(implementation)
    thresholds = {**DEFAULT_THRESHOLDS, **cfg["types"]}
    types = head_types(stats, thresholds)
    seconds["patterns"] = time.perf_counter() - t0

    def progress(measure):
        return lambda message: log.info("%s ablations: %s", measure, message)

    t0 = time.perf_counter()
    clean, ablated = head_ablation.head_effects(model, docs, head_ablation.task_measure, modes, means, cfg["batch_size"],
                                                cfg["max_rows"], pad_id, device, progress("task"))
    seconds["ablation_task"] = time.perf_counter() - t0
    rows = ablation_rows("task", modes, clean, ablated, len(keep))
    clean_metrics = {"task": {"loss": float(clean[0] / len(keep)), "accuracy": float(clean[1] / len(keep))}}
    log.info("task: clean loss %.4f, accuracy %.3f; %d heads x %d modes ablated in %.1f s", clean_metrics["task"]["loss"],
             clean_metrics["task"]["accuracy"], n_blocks * n_heads, len(modes), seconds["ablation_task"])
    del model

    if lm_source:
        from transformers import AutoModelForCausalLM

        t0 = time.perf_counter()
        lm = AutoModelForCausalLM.from_pretrained(lm_source).to(device).eval()
        lm.config.use_cache = False
        lm_means = head_ablation.head_means(lm, docs, cfg["batch_size"], pad_id, device) if "mean" in modes else None
        clean, ablated = head_ablation.head_effects(lm, docs, head_ablation.lm_measure, modes, lm_means,
                                                    cfg["batch_size"], cfg["max_rows"], pad_id, device, progress("lm"))
        seconds["ablation_lm"] = time.perf_counter() - t0
        rows += ablation_rows("lm", modes, clean, ablated, max(clean[1], 1))
        clean_metrics["lm"] = {"loss": float(clean[0] / max(clean[1], 1)), "tokens": int(clean[1])}
        log.info("lm: clean loss %.4f over %d tokens, ablated in %.1f s", clean_metrics["lm"]["loss"], int(clean[1]),
                 seconds["ablation_lm"])

    heads = pl.DataFrame({
        "layer": np.repeat(np.arange(1, n_blocks + 1), n_heads),
        "head": np.tile(np.arange(n_heads), n_blocks),
        **{name: stats[name].reshape(-1) for name in STATS},
        "type": types.reshape(-1).tolist(),
    }).with_columns(pl.col(name).fill_nan(None) for name in STATS)
    tokens = _doc_tokens(tokens_path, [doc_ids[i] for i in shown])
    shown_meta = [{"doc_id": doc_ids[i], "label": int(docs.labels[i]), "tokens": tokens[doc_ids[i]]} for i in shown]
    counts = heads["type"].value_counts(sort=True)
    summary = {
        "tokens": tokens_path,
        "classifier": classifier_dir,
        "lm": lm_source or None,
        "n_docs": int(len(keep)),
        "n_tokens": int(docs.n_tokens),
        "n_layers": n_blocks,
        "n_heads": n_heads,
        "modes": modes,
        "clean": clean_metrics,
        "thresholds": thresholds,
        "types": dict(zip(counts["type"].to_list(), counts["count"].to_list())),
        "pattern_docs": [m["doc_id"] for m in shown_meta],
        "device": models.describe_device(device),
        "seconds": {**seconds, "total": time.perf_counter() - started},
    }
    with io.atomic_dir(out_dir) as tmp:
        heads.write_parquet(tmp / "heads.parquet")
        pl.DataFrame(rows, schema_overrides={"accuracy": pl.Float64, "delta_accuracy": pl.Float64}).write_parquet(
            tmp / "ablation.parquet")
        save_file({f"doc{doc_ids[i]}": patterns[i] for i in shown}, str(tmp / "patterns.safetensors"))
        io.write_json(shown_meta, tmp / "patterns.json")
        io.write_json(summary, tmp / "heads.json")
    log.info("%s: head types %s; %.1f s", out_dir, summary["types"], summary["seconds"]["total"])
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow heads", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", required=True, help="tokens table of the test split")
    parser.add_argument("--classifier", required=True, help="task classifier folder of the variant")
    parser.add_argument("--lm", default="", help="causal LM source of the variant (GPT-2 family)")
    parser.add_argument("--family", required=True, help="model family: bert or gpt2 (gpt2 attention is causal)")
    parser.add_argument("--config", required=True, help="the heads config as JSON")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.tokens, args.classifier, args.lm or None, args.family, json.loads(args.config), args.out_dir)
