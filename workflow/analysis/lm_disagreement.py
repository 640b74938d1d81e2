"""Where two language models disagree, token by token (stage `lm_compare`).

Both LMs score the same tokens (`workflow.models.lm.Scored`: a causal LM's next-token predictions,
or a masked LM's at fixed masked positions). Per scored token: each model's loss on the true token,
each one's top prediction, and

    kl = KL(P_finetuned || P_pretrained) = sum_v P_ft(v) (log P_ft(v) - log P_pre(v))

of the two predicted distributions, in nats (clamped at 0 against float error): how much
information the fine-tuned model's prediction carries that the pretrained one's does not.
`documents` aggregates per document, `summarise` over the whole split.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from workflow.layout import VARIANTS
from workflow.models.lm import Scored
from workflow.store.tokens import Documents, labelled_batches

CONTEXT = 8  # tokens of left context kept per scored token
QUANTILES = (0.5, 0.9, 0.99)


def token_scores(models: dict, docs: Documents, kind: str, mask_id, batch_size: int, pad_id: int, device) -> dict:
    """Per scored token (in batch order): ``doc`` (position in `docs`), ``pos`` (of the target in the
    document or window), ``target``, ``loss_<variant>``, ``top_<variant>`` (token ids) and ``kl``, as
    numpy arrays; empty where nothing was scored. `models`: {"pretrained": LM, "finetuned": LM}."""
    import torch

    parts = []
    with torch.inference_mode():
        for idx, inputs, _ in labelled_batches(docs, batch_size, pad_id, device):
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
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def token_table(cols: dict, docs: Documents, tokenizer) -> pl.DataFrame:
    """tokens.parquet from `token_scores`' columns, in (document, position) order: token ids decoded,
    and `CONTEXT` tokens of left context per scored token."""
    order = np.lexsort((cols["pos"], cols["doc"]))
    cols = {k: v[order] for k, v in cols.items()}
    decode = tokenizer.convert_ids_to_tokens
    contexts = [
        tokenizer.convert_tokens_to_string(decode(docs.token_ids[d][max(0, p - CONTEXT) : p].tolist()))
        for d, p in zip(cols["doc"], cols["pos"])
    ]
    return pl.DataFrame(
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
    """lm.json (after `info`): both mean losses and perplexities (the exponent capped at 50), the KL's mean,
    `QUANTILES` and max, top-1 agreement, and the `n_top` most-disagreeing tokens and documents."""
    kl = table["kl"].to_numpy()
    losses = {v: float(table[f"loss_{v}"].mean()) for v in VARIANTS}
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
