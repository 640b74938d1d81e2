"""What a crosscoder says about each latent: relative decoder norm, decoder cosine, latent scaling.

All in the crosscoder's normalised space (each side scaled to mean squared norm d_in), where
the two sides' decoder norms compare.

Relative decoder norm (Minder et al. 2025): ``delta = 0.5 * ((|d_ft| - |d_pre|) /
max(|d_pre|, |d_ft|) + 1)``, 0 for a latent only the pretrained side decodes, 1 for one only
the fine-tuned side decodes, 0.5 for equal norms. Classes (thresholds under ``crosscoder:`` in
the config, defaults the published ones): ``pretrained_only`` (delta <= pretrained_only),
``finetuned_only`` (delta >= finetuned_only), ``shared`` (within shared_band of 0.5), ``other``.

Latent scaling (Minder et al. 2025): a latent that looks specific to one side may be one whose
other-side decoder shrank to zero although the other model still carries the direction
(Complete Shrinkage), or whose information the other side reconstructs with other latents
(Latent Decoupling). For each latent j with own-side decoder d (the side of its larger norm),
scalars ``beta = sum_x f_j(x) <d, y(x)> / (|d|^2 sum_x f_j(x)^2)`` are fitted for targets y:
each side's reconstruction error with j's own contribution added back (``y = x - x_hat +
f_j d_side``), and each side's reconstruction. ``nu_error = beta_error(other) /
beta_error(own)`` and ``nu_reconstruction`` likewise: near 0 for a latent truly specific to its
side, high for the artefacts. A side-specific latent is ``robust`` when both ratios are below
the config's limits.

Sign convention: fine-tuned minus pretrained, as everywhere (delta > 0.5: the fine-tuned side's
decoder is the larger).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.analysis.features import describe
from workflow.layout import VARIANTS
from workflow.sae.codes import sparse_codes
from workflow.sae.metrics import l0_warning

CLASSES = ("pretrained_only", "shared", "finetuned_only", "other")
CATEGORIES = ("kept", "changed", "removed", "new", "dead")


def relative_norm(norms: np.ndarray) -> np.ndarray:
    """(d_sae, 2) decoder norms (pretrained, fine-tuned) -> delta in [0, 1]."""
    pre, ft = norms[:, 0], norms[:, 1]
    return 0.5 * ((ft - pre) / np.maximum(np.maximum(pre, ft), 1e-12) + 1)


def latent_classes(delta: np.ndarray, cfg: dict) -> np.ndarray:
    out = np.full(len(delta), "other", dtype=object)
    out[np.abs(delta - 0.5) <= cfg["shared_band"]] = "shared"
    out[delta <= cfg["pretrained_only"]] = "pretrained_only"
    out[delta >= cfg["finetuned_only"]] = "finetuned_only"
    return out


def side_cosines(W_dec: np.ndarray, side: int) -> np.ndarray:
    """(d_sae,) cosine between each latent's two decoders; W_dec (d_sae, 2 x side)."""
    a, b = W_dec[:, :side], W_dec[:, side:]
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def _ratio(sums: dict, what: str, den: np.ndarray, own: np.ndarray) -> np.ndarray:
    """beta(other side) / beta(own side) of every latent, from the numerators in `sums`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.stack([np.where(den > 0, sums[(what, s)] / den, np.nan) for s in (0, 1)], axis=1)
        rows = np.arange(len(own))
        return beta[rows, 1 - own] / beta[rows, own]


def statistics(cc, paired, max_tokens: int | None, batch_rows: int, device="cpu") -> dict:
    """One pass over paired activations: per latent the firing frequency, mean activation and the
    latent-scaling sums; per side the FVU. `paired`: `PairedSets` (or anything with
    iter_batches of concatenated rows)."""
    import torch

    d, d_sae, side = cc.d_in, cc.d_sae, cc.side
    W = cc.W_dec.detach()
    dec = W.reshape(d_sae, 2, side)  # normalised-space decoders of each side
    norms = dec.norm(dim=2)
    own_side = (norms[:, 1] > norms[:, 0]).long()  # the side whose decoder is the larger
    own = dec[torch.arange(d_sae), own_side]  # (d_sae, side)
    dots = (dec * own[:, None, :]).sum(2)  # (d_sae, 2): <d_side, d_own>
    sums = {k: torch.zeros(d_sae, dtype=torch.float64, device=device) for k in ("fires", "f", "ff")}
    beta = {
        (what, s): torch.zeros(d_sae, dtype=torch.float64, device=device) for what in ("error", "recon") for s in (0, 1)
    }
    sq_err = np.zeros(2)
    sum_x, sum_xx, n = np.zeros((2, side)), np.zeros(2), 0
    limit = paired.n_rows if max_tokens is None else min(max_tokens, paired.n_rows)
    with torch.inference_mode():
        for batch in paired.iter_batches(batch_rows):
            batch = batch[: limit - n]
            if not len(batch):
                break
            x = torch.from_numpy(batch.astype(np.float32)).to(device) * cc.scale
            f = cc.activation((x - cc.b_dec) @ cc.W_enc + cc.b_enc)
            recon = f @ W + cc.b_dec
            sums["fires"] += (f > 0).sum(0)
            sums["f"] += f.sum(0, dtype=torch.float64)
            sums["ff"] += (f * f).sum(0, dtype=torch.float64)
            for s in (0, 1):
                cut = slice(s * side, (s + 1) * side)
                err, rec = x[:, cut] - recon[:, cut], recon[:, cut]
                # <d_own_j, err + f_j d_side_j> for every latent j, and <d_own_j, recon>
                beta[("error", s)] += (f * (err @ own.t() + f * dots[:, s])).sum(0, dtype=torch.float64)
                beta[("recon", s)] += (f * (rec @ own.t())).sum(0, dtype=torch.float64)
                sq_err[s] += float(err.double().pow(2).sum())
                xs = x[:, cut].double()
                sum_x[s] += xs.sum(0).cpu().numpy()
                sum_xx[s] += float(xs.pow(2).sum())
            n += len(x)
    den = (own.double().pow(2).sum(1) * sums["ff"]).cpu().numpy()
    b = {key: v.cpu().numpy() for key, v in beta.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        total = sum_xx - (sum_x**2).sum(1) / max(n, 1)
        fvu = sq_err / np.where(total > 0, total, np.nan)
    own_np = own_side.cpu().numpy()
    fires = sums["fires"].cpu().numpy()
    return {
        "n_tokens": n,
        "frequency": fires / max(n, 1),
        "mean_activation": sums["f"].cpu().numpy() / max(n, 1),
        "nu_error": _ratio(b, "error", den, own_np),
        "nu_reconstruction": _ratio(b, "recon", den, own_np),
        "fvu": {"pretrained": float(fvu[0]), "finetuned": float(fvu[1])},
        "l0": float(fires.sum() / max(n, 1)),
        "dead_fraction": float((fires == 0).mean()),
        "d": d,
    }


def latent_table(cc, stats: dict, cfg: dict) -> pl.DataFrame:
    """One row per latent: both decoder norms, delta, class, the decoders' cosine, latent scaling,
    frequency, and the latent's category in the study's terms (`category`)."""
    W = cc.W_dec.detach().cpu().numpy()
    norms = cc.decoder_norms().cpu().numpy()
    delta = relative_norm(norms)
    classes = latent_classes(delta, cfg)
    cos = side_cosines(W, cc.side)
    specific = np.isin(classes, ["pretrained_only", "finetuned_only"])
    robust = (
        specific
        & (stats["nu_error"] < cfg["nu_error_max"])
        & (stats["nu_reconstruction"] < cfg["nu_reconstruction_max"])
    )
    table = pl.DataFrame(
        {
            "latent": np.arange(cc.d_sae, dtype=np.int32),
            "norm_pretrained": norms[:, 0],
            "norm_finetuned": norms[:, 1],
            "relative_norm": delta,
            "class": classes.astype(str),
            "decoder_cos": cos,
            "nu_error": np.where(specific, stats["nu_error"], np.nan),
            "nu_reconstruction": np.where(specific, stats["nu_reconstruction"], np.nan),
            "robust": robust,
            "frequency": stats["frequency"],
            "mean_activation": stats["mean_activation"],
        }
    )
    return table.with_columns(pl.Series("category", categories(table, cfg)))


def categories(table: pl.DataFrame, cfg: dict) -> np.ndarray:
    """The latent's category in the matching's terms: kept (shared, decoder cosine >=
    retained_cosine), changed (shared with a turned decoder, or a norm that moved but did not
    vanish), removed (pretrained-only), new (fine-tuned-only), dead (never fires)."""
    cls, cos = table["class"].to_numpy(), table["decoder_cos"].to_numpy()
    out = np.where(cls == "pretrained_only", "removed", np.where(cls == "finetuned_only", "new", "changed")).astype(
        object
    )
    out[(cls == "shared") & (cos >= cfg["retained_cosine"])] = "kept"
    out[table["frequency"].to_numpy() == 0] = "dead"
    return out


def latent_counts(table: pl.DataFrame) -> dict:
    """Counts of `latent_table`'s rows: live latents per class (and those latent scaling keeps as
    robust), all latents per category, the shared latents' median decoder cosine."""
    live = table.filter(table["frequency"] > 0)
    shared = live.filter(live["class"] == "shared")
    return {
        "classes": {c: int((live["class"] == c).sum()) for c in CLASSES},
        "robust": {
            c: int((live["robust"] & (live["class"] == c)).sum()) for c in ("pretrained_only", "finetuned_only")
        },
        "categories": {c: int((table["category"] == c).sum()) for c in CATEGORIES},
        "shared_decoder_cos_median": float(np.nanmedian(shared["decoder_cos"])) if len(shared) else None,
    }


def quality(cc, stats: dict, table: pl.DataFrame, recipe: dict) -> dict:
    """The crosscoder's own numbers from `statistics` and `latent_table`: FVU and explained variance per
    side, L0 (and the warning when it is far from the recipe's target), dead fraction, `latent_counts`."""
    return {
        "d_sae": cc.d_sae,
        "n_tokens": stats["n_tokens"],
        "fvu": stats["fvu"],
        "explained_variance": {v: 1 - f for v, f in stats["fvu"].items()},
        "l0": stats["l0"],
        "l0_warning": l0_warning(recipe, stats["l0"]),
        "dead_fraction": stats["dead_fraction"],
        **latent_counts(table),
    }


def latent_features(cc, test, tokens: pl.DataFrame, labels: list, concepts: list, cfg: dict, device):
    """What each latent responds to on the test tokens, as the features stage gives it for an SAE
    (`workflow.analysis.features.describe`: statistics, top and quantile examples), with each
    variant's contribution to the latent's pre-activation on every example token (``acts_pretrained``,
    ``acts_finetuned``): which variant's activations drive the latent there. `test`: `PairedSets`
    whose row i is row i of `tokens`; `cfg`: the features section. Returns (features table, examples
    table, summary)."""
    codes = sparse_codes(cc, test, cfg["max_tokens"], cfg["batch_rows"], device)
    sides = {f"acts_{v}": _contribution(cc, test, side, device) for side, v in enumerate(VARIANTS)}
    table, examples, _ = describe(codes, tokens, labels, concepts, cfg, sides)
    summary = {
        "n_tokens": codes.n_rows,
        "d_sae": codes.d_sae,
        "label_names": labels,
        "concepts": concepts,
        "l0": len(codes.value) / max(codes.n_rows, 1),
        "n_examples": len(examples),
    }
    return table, examples, summary


def _contribution(cc, test, side: int, device):
    """fn(rows, features) -> (n,) one side's contribution to each (row, latent)'s pre-activation."""
    import torch

    def fn(rows, features):
        with torch.inference_mode():
            x = torch.from_numpy(test.rows(rows).astype(np.float32)).to(device)
            f = torch.from_numpy(np.asarray(features, dtype=np.int64)).to(device)
            return cc.side_contributions(x, f, side).float().cpu().numpy()

    return fn
