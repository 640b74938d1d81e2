"""Stage `lm_compare`: where the two variants' language models disagree, token by token.

Both variants' LMs (`Plan.lm_spec`: a causal LM's next-token predictions, or a masked LM's at
fixed masked positions, `workflow.models.lm`) run over the same test documents. Per scored
token: each variant's loss on the true token, each one's top prediction, and

    kl = KL(P_finetuned || P_pretrained)

of the two predicted distributions (nats): how much information the fine-tuned model's
prediction carries that the pretrained one's does not; 0 where they agree. Outputs:

- ``tokens.parquet``: every scored token (``doc_id``, ``pos`` in the document, or in its window where
  tokenize.stride windows documents, the token, a
  short left context, both losses and top predictions, ``kl``);
- ``documents.parquet``: per document, its mean and largest KL, both mean losses and the
  token where they disagree most;
- ``lm.json``: test loss and perplexity of both variants, the KL distribution (mean and
  quantiles), the most-disagreeing tokens and documents;
- ``kl.png``: the distribution of per-token KL (log scale).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.models import loading
from workflow.models.lm import Scored
from workflow.models.sources import resolve_source
from workflow.report.figures.canvas import pyplot, save
from workflow.runner import cli
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import labelled_batches, read_documents

log = logging.getLogger(__name__)

CONTEXT = 8  # tokens of left context kept per scored token
QUANTILES = (0.5, 0.9, 0.99)


def _load(spec: dict, device):
    return loading.load_lm(resolve_source(spec["source"]), device, spec["kind"], spec.get("body"))


def compare(specs: dict, tokens_path: str, cfg: dict) -> tuple[pl.DataFrame, dict]:
    """Per scored token: losses, top predictions and KL of the two variants (`specs`: {variant: lm spec})."""
    import torch

    device = loading.pick_device()
    kind = specs["pretrained"]["kind"]
    models = {v: _load(specs[v], device) for v in layout.VARIANTS}
    base = resolve_source(specs["pretrained"]["source"])
    tokenizer = loading.load_tokenizer(base)
    pad_id, mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
    docs = read_documents(tokens_path).sample(max_docs=cfg["max_docs"], seed=cfg["seed"])
    log.info("device: %s; %s LMs on %d test documents", loading.describe_device(device), kind, len(docs.token_ids))
    parts = []
    with torch.inference_mode():
        for idx, inputs, _ in labelled_batches(docs, cfg["batch_size"], pad_id, device):
            scored = Scored(docs, idx, inputs, kind, mask_id)
            logp = {v: scored.log_probs(m(**scored.inputs).logits) for v, m in models.items()}
            pre, ft = logp["pretrained"], logp["finetuned"]
            kl = (ft.exp() * (ft - pre)).sum(-1).clamp_min(0)
            rows, pos = scored.rows.cpu().numpy(), scored.target_pos.cpu().numpy()
            doc = idx[rows]
            parts.append(
                {
                    "doc": doc,
                    "pos": pos,
                    "target": scored.targets.cpu().numpy(),
                    "loss_pretrained": (-pre.gather(1, scored.targets[:, None])[:, 0]).cpu().numpy(),
                    "loss_finetuned": (-ft.gather(1, scored.targets[:, None])[:, 0]).cpu().numpy(),
                    "top_pretrained": pre.argmax(-1).cpu().numpy(),
                    "top_finetuned": ft.argmax(-1).cpu().numpy(),
                    "kl": kl.cpu().numpy(),
                }
            )
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    if not cols or not len(cols["kl"]):
        raise ValueError(f"{tokens_path}: no token to score (documents of one token each?)")
    order = np.lexsort((cols["pos"], cols["doc"]))
    cols = {k: v[order] for k, v in cols.items()}
    decode = tokenizer.convert_ids_to_tokens
    contexts = [
        tokenizer.convert_tokens_to_string(decode(docs.token_ids[d][max(0, p - CONTEXT) : p].tolist()))
        for d, p in zip(cols["doc"], cols["pos"])
    ]
    table = pl.DataFrame(
        {
            "doc_id": docs.doc_ids[cols["doc"]].astype(np.int64),
            "pos": cols["pos"].astype(np.int32),
            "token": decode(cols["target"].tolist()),
            "context": contexts,
            "loss_pretrained": cols["loss_pretrained"].astype(np.float32),
            "loss_finetuned": cols["loss_finetuned"].astype(np.float32),
            "top_pretrained": decode(cols["top_pretrained"].tolist()),
            "top_finetuned": decode(cols["top_finetuned"].tolist()),
            "kl": cols["kl"].astype(np.float32),
        }
    )
    return table, {"kind": kind, "n_docs": len(docs.token_ids), "device": loading.describe_device(device)}


def documents(table: pl.DataFrame) -> pl.DataFrame:
    """Per document: mean and largest KL, both mean losses, and the token where the variants disagree most."""
    return (
        table.sort("kl", descending=True)
        .group_by("doc_id", maintain_order=True)
        .agg(
            n_tokens=pl.len(),
            mean_kl=pl.col("kl").mean(),
            max_kl=pl.col("kl").first(),
            loss_pretrained=pl.col("loss_pretrained").mean(),
            loss_finetuned=pl.col("loss_finetuned").mean(),
            max_kl_token=pl.col("token").first(),
            max_kl_context=pl.col("context").first(),
        )
        .sort("mean_kl", descending=True)
    )


def summarise(table: pl.DataFrame, docs: pl.DataFrame, info: dict, n_top: int) -> dict:
    import math

    kl = table["kl"].to_numpy()
    losses = {v: float(table[f"loss_{v}"].mean()) for v in layout.VARIANTS}
    return {
        **info,
        "n_tokens": len(table),
        "convention": "kl = KL(P_finetuned || P_pretrained) per scored token, nats",
        **{v: {"loss": loss, "perplexity": math.exp(min(loss, 50.0))} for v, loss in losses.items()},
        "loss_change": losses["finetuned"] - losses["pretrained"],
        "kl": {
            "mean": float(kl.mean()),
            **{f"q{round(q * 100)}": float(np.quantile(kl, q)) for q in QUANTILES},
            "max": float(kl.max()),
        },
        "agreement": float((table["top_pretrained"] == table["top_finetuned"]).mean()),
        "top_tokens": table.sort("kl", descending=True).head(n_top).to_dicts(),
        "top_documents": docs.head(n_top).to_dicts(),
    }


def kl_plot(kl: np.ndarray, title: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    positive = kl[kl > 0]
    low = max(float(positive.min()) if len(positive) else 1e-6, 1e-6)
    bins = np.logspace(np.log10(low), np.log10(max(float(kl.max()), low * 10)), 50)
    ax.hist(np.clip(kl, low, None), bins=bins, color="#4c72b0")
    ax.set_xscale("log")
    ax.set_xlabel("KL(fine-tuned || pretrained) per token (nats)")
    ax.set_ylabel("tokens")
    ax.axvline(float(kl.mean()), color="k", linestyle="--", linewidth=1, label=f"mean {kl.mean():.3g}")
    ax.legend()
    ax.set_title(title)
    save(fig, path)


def run(specs: dict, tokens_path: str, cfg: dict, out_dir: str, title: str = "") -> dict:
    started = time.perf_counter()
    table, info = compare(specs, tokens_path, cfg)
    docs = documents(table)
    summary = summarise(table, docs, {**info, "lms": specs}, cfg["n_top"])
    summary["seconds"] = time.perf_counter() - started
    names = layout.LM_COMPARE.names
    with atomic_dir(out_dir) as tmp:
        table.write_parquet(tmp / names["tokens"])
        docs.write_parquet(tmp / names["documents"])
        kl_plot(table["kl"].to_numpy(), title, tmp / names["plot"])
        write_json(summary, tmp / names["summary"])
    log.info(
        "%s: loss pretrained %.4f fine-tuned %.4f; KL mean %.4f median %.4f max %.3f over %d tokens; top-1 agree %.3f",
        out_dir,
        summary["pretrained"]["loss"],
        summary["finetuned"]["loss"],
        summary["kl"]["mean"],
        summary["kl"]["q50"],
        summary["kl"]["max"],
        summary["n_tokens"],
        summary["agreement"],
    )
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    for v in layout.VARIANTS:
        cli.add_lm(parser, f"--{v}-lm", f"the {v} model")
    parser.add_argument("--tokens", required=True, help="tokens table of the test split")
    cli.add_config(parser, "lm_compare config")
    cli.add_load(parser)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--title", default="")
    args = cli.parse_model_job(parser, argv)
    run({v: getattr(args, f"{v}_lm") for v in layout.VARIANTS}, args.tokens, args.config, args.out_dir, args.title)
