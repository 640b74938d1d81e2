"""Stage `diff`: what fine-tuning did to the features of one (site, layer, recipe).

Compares the pretrained SAE (trained on the pretrained model's activations)
with the fine-tuned SAE (same recipe, fine-tuned model), on the held-out token
rows both activation sets share.

Matching: decoder rows are normalised and the live features (those that fire
on the test tokens) are paired one-to-one by maximum total cosine (optimal
assignment, `scipy.optimize.linear_sum_assignment`; the cosine matrix takes
4 bytes x d_sae^2). For each pair, ``act_corr`` is the Pearson correlation of
the two features' activations on the same token rows (pretrained SAE on
pretrained activations against fine-tuned SAE on fine-tuned activations).
``best_cos`` is each feature's largest cosine with any live feature of the
other side, one-to-one or not: a feature that split in two keeps one partner,
and its best cosine shows the other half.

Categories (thresholds under `diff:` in the config). A pretrained feature is
- ``dead`` if it never fires on the pretrained activations;
- ``retained`` if its partner fires, decoder cosine >= retained_cosine and
  act_corr >= retained_correlation (same direction, same tokens);
- ``drifted`` if its partner fires and cosine >= match_cosine, but it is not
  retained (the direction turned or the tokens it fires on changed);
- ``overwritten`` otherwise: its one-to-one partner points elsewhere
  (cosine < match_cosine) or there is none.
A fine-tuned feature is ``dead`` if it never fires on the fine-tuned
activations, shares the category of its partner if that is retained or
drifted, and is ``new`` otherwise.

Both SAEs of a recipe start from the same seeded initialisation, so a latent
the data hardly moves stays paired with its twin; ``init_cosine_median`` in
diff.json says how far each decoder moved from that start (a warning is
logged when the median stays above match_cosine).

Sign convention: every difference is fine-tuned minus pretrained
(``delta_frequency`` > 0: fires more after fine-tuning).

SAE transfer (Kissane et al. 2024): each SAE on each variant's activations.
Explained variance, L0 and spliced loss recovered (in the task classifier of
the activations' variant) of the pretrained SAE on fine-tuned activations, and
the reverse, next to each SAE on its own model, all computed the same way.
Outlier-norm tokens (norm > outlier_norm_factor x the median token norm of the
set, e.g. GPT-2's first position) are left out of the firing frequencies, the
correlations and the transfer metrics, and keep their clean value when
splicing, as the literature leaves out BOS. The own-model rows of the transfer
table therefore equal `evaluate_sae`'s numbers only where no token is an outlier.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import io, models, sae as saes
from workflow.codes import encode_batches
from workflow.evaluate_sae import _finite, lm_effects, task_effects
from workflow.reconstruction import Reconstruction
from workflow.tokenize import read_documents

log = logging.getLogger(__name__)

VARIANTS = ("pretrained", "finetuned")
PRE_CATEGORIES = ("retained", "drifted", "overwritten", "dead")
FT_CATEGORIES = ("retained", "drifted", "new", "dead")


def decoder_cosines(W_dec_pre: np.ndarray, W_dec_ft: np.ndarray) -> np.ndarray:
    """(d_sae_pre, d_sae_ft) cosines of the decoder rows (float32: 2.4 GB at 24,576 latents each)."""
    a = W_dec_pre / np.maximum(np.linalg.norm(W_dec_pre, axis=1, keepdims=True), 1e-12)
    b = W_dec_ft / np.maximum(np.linalg.norm(W_dec_ft, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


def match_features(sim: np.ndarray, live_pre: np.ndarray | None = None, live_ft: np.ndarray | None = None):
    """One-to-one pairing of the live features of both sides by maximum total decoder cosine.
    partner[i]: the fine-tuned feature paired with pretrained feature i (-1: none, e.g. dead);
    cos[i]: their cosine. Dead features take no part, so they cannot take a live feature's partner."""
    from scipy.optimize import linear_sum_assignment

    live_pre = np.ones(sim.shape[0], bool) if live_pre is None else live_pre
    live_ft = np.ones(sim.shape[1], bool) if live_ft is None else live_ft
    rows_live, cols_live = np.flatnonzero(live_pre), np.flatnonzero(live_ft)
    rows, cols = linear_sum_assignment(sim[np.ix_(rows_live, cols_live)], maximize=True)
    rows, cols = rows_live[rows], cols_live[cols]
    partner = np.full(sim.shape[0], -1, dtype=np.int64)
    partner[rows] = cols
    cos = np.full(sim.shape[0], np.nan)
    cos[rows] = sim[rows, cols]
    return partner, cos


def best_cosines(sim: np.ndarray, live_pre: np.ndarray, live_ft: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the largest decoder cosine with any live feature of the other side (not one-to-one:
    a feature split in two after fine-tuning has a high best cosine but only one partner)."""
    best_pre = sim[:, live_ft].max(1) if live_ft.any() else np.full(sim.shape[0], np.nan)
    best_ft = sim[live_pre].max(0) if live_pre.any() else np.full(sim.shape[1], np.nan)
    return best_pre.astype(np.float64), best_ft.astype(np.float64)


def firing_frequency(sae, aset: io.ActivationSet, max_norm: float, max_tokens: int | None, batch_rows: int, device) -> np.ndarray:
    """Share of the (non-outlier) tokens on which each feature fires."""
    fires, n = np.zeros(sae.d_sae), 0
    for _, x, acts in encode_batches(sae, aset, max_tokens, batch_rows, device):
        keep = x.norm(dim=1) <= max_norm
        fires += (acts[keep] > 0).sum(0).cpu().numpy()
        n += int(keep.sum())
    return fires / max(n, 1)


def init_cosines(sae: dict) -> dict:
    """Median cosine between each SAE's decoder rows and the seeded initialisation both started from."""
    from workflow.train_sae import initial_sae

    d_in = sae["pretrained"].d_in
    recipe = {**sae["pretrained"].cfg["metadata"]["recipe"], "architecture": sae["pretrained"].name}
    start = initial_sae(recipe, d_in).W_dec.detach().numpy()
    start = start / np.maximum(np.linalg.norm(start, axis=1, keepdims=True), 1e-12)
    out = {}
    for v in VARIANTS:
        w = sae[v].W_dec.detach().cpu().numpy()
        out[v] = float(np.median((w * start).sum(1) / np.maximum(np.linalg.norm(w, axis=1), 1e-12)))
    return out


def paired_activations(sae_pre, sae_ft, set_pre: io.ActivationSet, set_ft: io.ActivationSet, partner: np.ndarray,
                       max_tokens: int | None, batch_rows: int, max_norm: dict | None = None, device="cpu") -> dict:
    """Firing frequencies of both SAEs on their own activations and the correlation of each matched pair,
    over the token rows that are outliers in neither set (norm above max_norm[variant])."""
    import torch

    limit = {v: float("inf") for v in VARIANTS} if max_norm is None else max_norm
    d_pre, d_ft = sae_pre.d_sae, sae_ft.d_sae
    sums = {k: np.zeros(d_pre) for k in ("a", "aa", "b", "bb", "ab")}
    fires_pre, fires_ft, n = np.zeros(d_pre), np.zeros(d_ft), 0
    paired = partner >= 0
    cols = torch.from_numpy(np.where(paired, partner, 0)).to(device)
    for (start_pre, x_pre, a), (start_ft, x_ft, b_all) in zip(encode_batches(sae_pre, set_pre, max_tokens, batch_rows, device),
                                                              encode_batches(sae_ft, set_ft, max_tokens, batch_rows, device)):
        if start_pre != start_ft or len(x_pre) != len(x_ft):
            raise ValueError(f"{set_pre.folder} and {set_ft.folder} are not row-aligned (batch at rows {start_pre} / {start_ft})")
        keep = (x_pre.norm(dim=1) <= limit["pretrained"]) & (x_ft.norm(dim=1) <= limit["finetuned"])
        a, b_all = a[keep], b_all[keep]
        b = b_all[:, cols]  # (B, d_pre): the partner of each pretrained feature
        for key, value in (("a", a), ("aa", a * a), ("b", b), ("bb", b * b), ("ab", a * b)):
            sums[key] += value.sum(0, dtype=torch.float64).cpu().numpy()
        fires_pre += (a > 0).sum(0).cpu().numpy()
        fires_ft += (b_all > 0).sum(0).cpu().numpy()
        n += len(a)
    cov = n * sums["ab"] - sums["a"] * sums["b"]
    var = (n * sums["aa"] - sums["a"] ** 2) * (n * sums["bb"] - sums["b"] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(var > 0, cov / np.sqrt(np.maximum(var, 1e-300)), np.nan)
    corr[~paired] = np.nan
    return {"n_tokens": n, "freq_pre": fires_pre / max(n, 1), "freq_ft": fires_ft / max(n, 1), "corr": corr}


def categorize(partner: np.ndarray, cos: np.ndarray, corr: np.ndarray, freq_pre: np.ndarray, freq_ft: np.ndarray,
               thresholds: dict) -> tuple[np.ndarray, np.ndarray]:
    """Category of each pretrained and each fine-tuned feature (see the module docstring)."""
    paired = partner >= 0
    partner_fires = np.zeros(len(partner), dtype=bool)
    partner_fires[paired] = freq_ft[partner[paired]] > 0
    matched = paired & partner_fires & (np.nan_to_num(cos, nan=-1) >= thresholds["match_cosine"])
    retained = matched & (cos >= thresholds["retained_cosine"]) & (np.nan_to_num(corr, nan=-1) >= thresholds["retained_correlation"])
    pre = np.where(retained, "retained", np.where(matched, "drifted", "overwritten")).astype(object)
    pre[freq_pre == 0] = "dead"
    ft = np.full(len(freq_ft), "new", dtype=object)
    shared = paired & np.isin(pre, ["retained", "drifted"])
    ft[partner[shared]] = pre[shared]
    ft[freq_ft == 0] = "dead"
    return pre, ft


def diff_table(partner, cos, paired: dict, pre_cat, ft_cat, best: tuple | None = None) -> pl.DataFrame:
    """One row per feature of each side: its partner, the pair's cosine, correlation and frequencies."""
    d_ft = len(ft_cat)
    back = np.full(d_ft, -1, dtype=np.int64)
    back[partner[partner >= 0]] = np.flatnonzero(partner >= 0)
    f_pre, f_ft = paired["freq_pre"], paired["freq_ft"]
    ft_of_pre = np.where(partner >= 0, f_ft[np.maximum(partner, 0)], np.nan)
    pre_of_ft = np.where(back >= 0, f_pre[np.maximum(back, 0)], np.nan)
    pre = pl.DataFrame({
        "side": "pretrained", "feature": np.arange(len(partner)), "partner": partner, "decoder_cos": cos,
        "act_corr": paired["corr"], "frequency_pretrained": f_pre, "frequency_finetuned": ft_of_pre,
        "category": pre_cat.astype(str),
    })
    cos_ft = np.where(back >= 0, cos[np.maximum(back, 0)], np.nan)
    corr_ft = np.where(back >= 0, paired["corr"][np.maximum(back, 0)], np.nan)
    ft = pl.DataFrame({
        "side": "finetuned", "feature": np.arange(d_ft), "partner": back, "decoder_cos": cos_ft, "act_corr": corr_ft,
        "frequency_pretrained": pre_of_ft, "frequency_finetuned": f_ft, "category": ft_cat.astype(str),
    })
    if best is not None:
        pre = pre.with_columns(pl.Series("best_cos", best[0]))
        ft = ft.with_columns(pl.Series("best_cos", best[1]))
    return pl.concat([pre, ft]).with_columns(
        (pl.col("frequency_finetuned") - pl.col("frequency_pretrained")).alias("delta_frequency"),
        pl.col("feature").cast(pl.Int32), pl.col("partner").cast(pl.Int32))


def category_counts(table: pl.DataFrame) -> dict:
    out = {}
    for side, names in (("pretrained", PRE_CATEGORIES), ("finetuned", FT_CATEGORIES)):
        cats = table.filter(pl.col("side") == side)["category"]
        counts = {name: int((cats == name).sum()) for name in names}
        out[side] = {"counts": counts, "fractions": {k: v / max(len(cats), 1) for k, v in counts.items()}}
    return out


def most_changed(table: pl.DataFrame, features: dict, examples: dict, n: int) -> pl.DataFrame:
    """The drifted pairs of lowest cosine x correlation, and the most frequent overwritten and new features,
    with the top tokens and top example contexts of each side."""
    pre = table.filter(pl.col("side") == "pretrained")
    ft = table.filter(pl.col("side") == "finetuned")
    drifted = (pre.filter(pl.col("category") == "drifted")
               .with_columns((pl.col("decoder_cos") * pl.col("act_corr").fill_nan(0).clip(0, 1)).alias("agreement"))
               .sort("agreement").head(n).select(pl.lit("drifted").alias("kind"), pl.col("feature").alias("pretrained_feature"),
                                                 pl.col("partner").alias("finetuned_feature"), "decoder_cos", "act_corr", "delta_frequency"))
    over = (pre.filter(pl.col("category") == "overwritten").sort("frequency_pretrained", descending=True).head(n)
            .select(pl.lit("overwritten").alias("kind"), pl.col("feature").alias("pretrained_feature"),
                    pl.lit(None, pl.Int32).alias("finetuned_feature"), "decoder_cos", "act_corr", "delta_frequency"))
    new = (ft.filter(pl.col("category") == "new").sort("frequency_finetuned", descending=True).head(n)
           .select(pl.lit("new").alias("kind"), pl.lit(None, pl.Int32).alias("pretrained_feature"),
                   pl.col("feature").alias("finetuned_feature"), "decoder_cos", "act_corr", "delta_frequency"))
    changed = pl.concat([drifted, over, new])
    for variant, column in (("pretrained", "pretrained_feature"), ("finetuned", "finetuned_feature")):
        tops = features[variant].select(pl.col("feature").alias(column), pl.col("top_tokens").alias(f"{variant}_top_tokens"))
        contexts = (examples[variant].filter(pl.col("kind") == "top").sort(["feature", "rank"])
                    .group_by("feature", maintain_order=True).head(3)
                    .with_columns(pl.struct("tokens", "center").map_elements(_context_text, return_dtype=pl.Utf8).alias("text"))
                    .group_by("feature", maintain_order=True).agg(pl.col("text").alias(f"{variant}_examples"))
                    .rename({"feature": column}))
        changed = changed.join(tops, on=column, how="left", maintain_order="left").join(contexts, on=column, how="left", maintain_order="left")
    return changed


def _context_text(example: dict) -> str:
    tokens = list(example["tokens"])
    tokens[example["center"]] = f"[[{tokens[example['center']]}]]"
    return " ".join(tokens)


def outlier_limit(aset: io.ActivationSet, factor: float, max_tokens: int | None, batch_rows: int) -> float:
    """Token norms above this are outliers: factor x the median norm of the set."""
    limit = aset.n_rows if max_tokens is None else min(max_tokens, aset.n_rows)
    norms, n = [], 0
    for batch in aset.iter_batches(batch_rows):
        batch = batch[: limit - n].astype(np.float32)
        if not len(batch):
            break
        norms.append(np.linalg.norm(batch, axis=1))
        n += len(batch)
    return float(factor * np.median(np.concatenate(norms)))


def transfer_reconstruction(sae, aset: io.ActivationSet, max_norm: float, max_tokens: int | None, batch_rows: int,
                            device="cpu") -> dict:
    import torch

    stats = Reconstruction(sae.d_in, sae.d_sae)
    excluded = 0
    for _, x, acts in encode_batches(sae, aset, max_tokens, batch_rows, device):
        keep = x.norm(dim=1) <= max_norm
        excluded += int((~keep).sum())
        with torch.inference_mode():
            stats.update(x[keep], acts[keep], sae.decode(acts[keep]))
    return {**stats.result(), "n_outliers": excluded}


def run(sae_dirs: dict, acts_dirs: dict, features_dirs: dict, tokens_path: str, classifiers: dict, lm_sources: dict,
        cfg: dict, eval_cfg: dict, out_dir: str) -> dict:
    started = time.perf_counter()
    device = models.pick_device()
    sae = {v: saes.load(sae_dirs[v], device) for v in VARIANTS}
    sets = {v: io.ActivationSet(acts_dirs[v]) for v in VARIANTS}
    if sets["pretrained"].n_rows != sets["finetuned"].n_rows:
        raise ValueError(f"{acts_dirs['pretrained']} and {acts_dirs['finetuned']} hold different token rows")
    for v in VARIANTS:
        if sets[v].d_model != sae[v].d_in:
            raise ValueError(f"{acts_dirs[v]}: d_model {sets[v].d_model} does not match the SAE's d_in {sae[v].d_in}")
    meta = sae["pretrained"].cfg["metadata"]["study"]
    site, layer = meta["site"], meta["layer"]
    max_norm = {v: outlier_limit(sets[v], cfg["outlier_norm_factor"], cfg["max_tokens"], cfg["batch_rows"]) for v in VARIANTS}

    live = {v: firing_frequency(sae[v], sets[v], max_norm[v], cfg["max_tokens"], cfg["batch_rows"], device) > 0 for v in VARIANTS}
    sim = decoder_cosines(*(sae[v].W_dec.detach().cpu().numpy() for v in VARIANTS))
    partner, cos = match_features(sim, live["pretrained"], live["finetuned"])
    best = best_cosines(sim, live["pretrained"], live["finetuned"])
    del sim
    init_cos = init_cosines(sae)
    if max(init_cos.values()) >= cfg["match_cosine"]:
        log.warning("decoder rows moved little from the initialisation both SAEs share (median cosine %s): matched "
                    "cosines partly reflect it; train longer or with a larger lr", init_cos)
    paired = paired_activations(sae["pretrained"], sae["finetuned"], sets["pretrained"], sets["finetuned"], partner,
                                cfg["max_tokens"], cfg["batch_rows"], max_norm, device)
    pre_cat, ft_cat = categorize(partner, cos, paired["corr"], paired["freq_pre"], paired["freq_ft"], cfg)
    table = diff_table(partner, cos, paired, pre_cat, ft_cat, best)
    counts = category_counts(table)
    log.info("L%d %s: pretrained %s; fine-tuned %s", layer, site, counts["pretrained"]["counts"], counts["finetuned"]["counts"])

    features = {v: pl.read_parquet(Path(features_dirs[v]) / "features.parquet", columns=["feature", "top_tokens"]) for v in VARIANTS}
    examples = {v: pl.read_parquet(Path(features_dirs[v]) / "examples.parquet", columns=["feature", "kind", "rank", "tokens", "center"])
                for v in VARIANTS}
    changed = most_changed(table, features, examples, cfg["n_changed"])

    docs = read_documents(tokens_path).sample(max_docs=eval_cfg["max_docs"], seed=0)
    rows = []
    for acts_variant in VARIANTS:  # each variant's model: clean and zero-ablated once, both SAEs spliced in
        task = task_effects(classifiers[acts_variant], docs, site, layer, sae, eval_cfg["batch_size"], device,
                            max_norm=max_norm[acts_variant])
        lm = (lm_effects(lm_sources[acts_variant], docs, site, layer, sae, eval_cfg["batch_size"], device,
                         max_norm=max_norm[acts_variant]) if lm_sources.get(acts_variant) else None)
        for sae_variant in VARIANTS:
            rec = transfer_reconstruction(sae[sae_variant], sets[acts_variant], max_norm[acts_variant], cfg["max_tokens"],
                                          cfg["batch_rows"], device)
            t = task[sae_variant]
            row = {"sae": sae_variant, "activations": acts_variant, "own": sae_variant == acts_variant, **rec,
                   **{f"task_{k}": t[k] for k in ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered",
                                                   "accuracy_clean", "accuracy_spliced", "kl")}}
            if lm is not None:
                row.update({f"lm_{k}": lm[sae_variant][k] for k in ("loss_clean", "loss_spliced", "loss_recovered", "kl")})
            rows.append(row)
            log.info("%s SAE on %s activations: explained variance %.3f, L0 %.1f, task loss recovered %.3f (%d outliers)",
                     sae_variant, acts_variant, rec["explained_variance"], rec["l0"], t["loss_recovered"], rec["n_outliers"])
    transfer = pl.DataFrame(rows)

    out = Path(out_dir)
    io.write_parquet(changed, out / "changed.parquet")
    io.write_parquet(transfer, out / "transfer.parquet")
    io.write_parquet(table, out / "diff.parquet")
    summary = {
        "site": site, "layer": layer, "saes": sae_dirs, "n_tokens": paired["n_tokens"], "thresholds": cfg,
        "sign_convention": "differences are fine-tuned minus pretrained", "categories": counts,
        "matched_cosine_median": float(np.nanmedian(cos)) if np.isfinite(cos).any() else None, "init_cosine_median": init_cos, "outlier_norm_limit": max_norm,
        "transfer": rows, "seconds": time.perf_counter() - started,
    }
    io.write_json(_finite(summary), out / "diff.json")
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow diff", description=__doc__.splitlines()[0])
    for v in VARIANTS:
        parser.add_argument(f"--{v}-sae", required=True, help=f"the {v} SAE folder (with features.parquet)")
        parser.add_argument(f"--{v}-acts", required=True, help=f"held-out activation set of the {v} model")
        parser.add_argument(f"--{v}-classifier", required=True, help=f"task classifier folder of the {v} model")
        parser.add_argument(f"--{v}-lm", default="", help=f"causal LM source of the {v} model (GPT-2 family)")
    parser.add_argument("--tokens", required=True, help="tokens table of the held-out split")
    parser.add_argument("--config", required=True, help="the diff config as JSON")
    parser.add_argument("--eval-config", required=True, help="the sae_eval config as JSON (documents for the spliced loss)")
    parser.add_argument("--out-dir", required=True)
    args = vars(parser.parse_args(argv))
    pick = lambda what: {v: args[f"{v}_{what}"] for v in VARIANTS}
    run(pick("sae"), pick("acts"), pick("sae"), args["tokens"], pick("classifier"), pick("lm"),
        json.loads(args["config"]), json.loads(args["eval_config"]), args["out_dir"])
