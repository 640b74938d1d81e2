"""Stage-wise SAE fine-tuning: how far each feature of the pretrained SAE moves when the SAE keeps
training on the fine-tuned variant's activations (Anthropic's "model diffing" update).

Feature j of the start SAE (trained on the pretrained variant) and feature j of the end SAE
(the same SAE after `steps` more steps on the fine-tuned variant) are the same latent, so no
matching is needed. Per feature: the decoder cosine and encoder cosine between start and end,
the firing frequency and mean activation of the start SAE on pretrained activations and of the
end SAE on fine-tuned activations of the same test tokens, and the correlation of the two.

Categories (the diff's thresholds). A feature is
- ``dead`` if the start SAE never fires it on the pretrained tokens (and ``new`` if the end SAE
  fires it on the fine-tuned ones: a latent the fine-tuned data revived);
- ``removed`` if it fires on fewer than `removed_frequency` x its pretrained share of the
  fine-tuned tokens (the input it read is gone), or if it was ``repurposed``: its decoder turned
  past match_cosine, or turned past retained_cosine while it fires on other tokens (activation
  correlation below retained_correlation); it now reads and writes something else, which is
  ``new`` for the fine-tuned side;
- ``kept`` if decoder cosine >= retained_cosine and activation correlation >=
  retained_correlation (same direction, same tokens), ``changed`` otherwise (turned on the same
  tokens, or in place on other tokens).
`movement` (1 - decoder cosine) ranks the features that moved most: the stage-wise answer.
"""

from __future__ import annotations

import numpy as np
import polars as pl


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def movement_table(start, end, set_pre, set_ft, cfg: dict, max_norm: dict | None = None, device="cpu") -> pl.DataFrame:
    """One row per feature: how it moved, and its category on each side (see the module docstring)."""
    from workflow.analysis.matching import paired_activations

    identity = np.arange(start.d_sae)
    paired = paired_activations(
        start, end, set_pre, set_ft, identity, cfg["max_tokens"], cfg["batch_rows"], max_norm, device
    )
    dec = _cos_rows(start.W_dec.detach().cpu().numpy(), end.W_dec.detach().cpu().numpy())
    enc = _cos_rows(start.W_enc.detach().cpu().numpy().T, end.W_enc.detach().cpu().numpy().T)
    f_pre, f_ft = paired["freq_pre"], paired["freq_ft"]
    same_tokens = np.nan_to_num(paired["corr"], nan=-1.0) >= cfg["retained_correlation"]
    kept = (dec >= cfg["retained_cosine"]) & same_tokens
    repurposed = (dec < cfg["match_cosine"]) | ((dec < cfg["retained_cosine"]) & ~same_tokens)
    pre = np.where(kept, "kept", np.where(repurposed, "repurposed", "changed")).astype(object)
    pre[f_ft < cfg["removed_frequency"] * f_pre] = "removed"
    pre[f_pre == 0] = "dead"
    ft = np.where(pre == "repurposed", "new", pre).astype(object)
    ft[(pre == "dead") & (f_ft > 0)] = "new"
    ft[(pre != "dead") & (f_ft == 0)] = "dead"
    return pl.DataFrame(
        {
            "feature": identity.astype(np.int32),
            "decoder_cos": dec,
            "encoder_cos": enc,
            "movement": 1 - dec,
            "frequency_pretrained": f_pre,
            "frequency_finetuned": f_ft,
            "delta_frequency": f_ft - f_pre,
            "mean_pretrained": paired["mean_pre"],
            "mean_finetuned": paired["mean_ft"],
            "delta_activation": paired["mean_ft"] - paired["mean_pre"],
            "act_corr": paired["corr"],
            "category_pretrained": np.where(pre == "repurposed", "removed", pre).astype(str),
            "category_finetuned": ft.astype(str),
            "repurposed": pre == "repurposed",
        }
    )


def movement_summary(table: pl.DataFrame, n_moved: int) -> dict:
    """stagewise.json's numbers of `movement_table`: category counts per side, the repurposed features,
    the live features' median decoder and encoder cosines, and the `n_moved` that moved most."""
    live = table.filter(table["category_pretrained"] != "dead")
    moved = live.sort("movement", descending=True).head(n_moved)
    return {
        "categories": {
            side: {c: int((table[f"category_{side}"] == c).sum()) for c in cats}
            for side, cats in (
                ("pretrained", ("kept", "changed", "removed", "dead")),
                ("finetuned", ("kept", "changed", "new", "dead")),
            )
        },
        "repurposed": int(table["repurposed"].sum()),
        "decoder_cos_median": float(np.median(live["decoder_cos"])) if len(live) else None,
        "encoder_cos_median": float(np.median(live["encoder_cos"])) if len(live) else None,
        "most_moved": moved.select("feature", "decoder_cos", "encoder_cos", "delta_frequency").to_dicts(),
    }
