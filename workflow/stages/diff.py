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

Seed baseline (``--seed-sae``): a second SAE of the recipe trained on the pretrained variant
with seed + 1, matched to the first in the same way on the same tokens. Its categories are the
noise floor: the share "retained" between two seeds is the most fine-tuning could show, the share
"drifted" between seeds is what training noise alone produces. diff.json gives each category's
share, its floor and the difference with a Wald 95% interval (`matching.floor_excess`), and says
whether the diff exceeds its floor.

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

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis.matching import (
    best_cosines,
    categorize,
    category_counts,
    decoder_cosines,
    diff_table,
    firing_frequency,
    floor_excess,
    match_features,
    most_changed,
    outlier_limit,
    paired_activations,
)
from workflow.layout import VARIANTS
from workflow.models.loading import pick_device
from workflow.runner import cli
from workflow.sae import load
from workflow.sae.downstream import lm_effects, task_effects
from workflow.sae.metrics import measure
from workflow.sae.training import initial_sae
from workflow.store.activations import ActivationSet
from workflow.store.files import write_json, write_parquet
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


def init_cosines(sae: dict) -> dict:
    """Median cosine between each SAE's decoder rows and the seeded initialisation both started from."""
    start = initial_sae(sae["pretrained"].recipe, sae["pretrained"].d_in).W_dec.detach().numpy()
    start = start / np.maximum(np.linalg.norm(start, axis=1, keepdims=True), 1e-12)
    out = {}
    for v in VARIANTS:
        w = sae[v].W_dec.detach().cpu().numpy()
        out[v] = float(np.median((w * start).sum(1) / np.maximum(np.linalg.norm(w, axis=1), 1e-12)))
    return out


TASK_KEYS = ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered", "accuracy_clean", "accuracy_spliced", "kl")
LM_KEYS = ("loss_clean", "loss_spliced", "loss_recovered", "kl")


@dataclass
class Pair:
    """Both variants' SAEs and held-out activation sets at one (site, layer), and each set's outlier limit."""

    sae: dict
    sets: dict
    site: str
    layer: int
    device: object
    max_norm: dict = field(default_factory=dict)


def _load(sae_dirs: dict, acts_dirs: dict, cfg: dict, device) -> Pair:
    """Both SAEs and both activation sets, checked to fit each other and to hold the same token rows."""
    sae = {v: load(sae_dirs[v], device) for v in VARIANTS}
    sets = {v: ActivationSet(acts_dirs[v]) for v in VARIANTS}
    if sets["pretrained"].n_rows != sets["finetuned"].n_rows:
        raise ValueError(f"{acts_dirs['pretrained']} and {acts_dirs['finetuned']} hold different token rows")
    for v in VARIANTS:
        if sets[v].d_model != sae[v].d_in:
            raise ValueError(f"{acts_dirs[v]}: d_model {sets[v].d_model} does not match the SAE's d_in {sae[v].d_in}")
    study = sae["pretrained"].cfg["metadata"]["study"]
    pair = Pair(sae, sets, study["site"], study["layer"], device)
    factor, tokens, rows = cfg["outlier_norm_factor"], cfg["max_tokens"], cfg["batch_rows"]
    pair.max_norm = {v: outlier_limit(sets[v], factor, tokens, rows) for v in VARIANTS}
    return pair


@dataclass
class Matched:
    """The matching of the two SAEs' features."""

    table: pl.DataFrame  # one row per feature of each side: partner, cosine, correlation, frequencies, category
    cos: np.ndarray  # (d_sae_pre,) decoder cosine of each pretrained feature with its partner (NaN: none)
    init_cos: dict  # variant -> median cosine of its decoder rows with the shared initialisation
    n_tokens: int  # token rows compared (outliers left out)


def match(pair: Pair, cfg: dict) -> Matched:
    """Pair the two SAEs' live features and categorise every feature of both."""
    sae, sets, tokens, rows = pair.sae, pair.sets, cfg["max_tokens"], cfg["batch_rows"]
    live = {v: firing_frequency(sae[v], sets[v], pair.max_norm[v], tokens, rows, pair.device) > 0 for v in VARIANTS}
    sim = decoder_cosines(*(sae[v].W_dec.detach().cpu().numpy() for v in VARIANTS))
    partner, cos = match_features(sim, live["pretrained"], live["finetuned"])
    best = best_cosines(sim, live["pretrained"], live["finetuned"])
    del sim
    init_cos = init_cosines(sae)
    if max(init_cos.values()) >= cfg["match_cosine"]:
        log.warning(
            "decoder rows moved little from the initialisation both SAEs share (median cosine %s): matched "
            "cosines partly reflect it; train longer or with a larger lr",
            init_cos,
        )
    paired = paired_activations(
        *(sae[v] for v in VARIANTS), *(sets[v] for v in VARIANTS), partner, tokens, rows, pair.max_norm, pair.device
    )
    pre_cat, ft_cat = categorize(partner, cos, paired["corr"], paired["freq_pre"], paired["freq_ft"], cfg)
    table = diff_table(partner, cos, paired, pre_cat, ft_cat, best)
    return Matched(table, cos, init_cos, paired["n_tokens"])


def _transfer_row(
    pair: Pair, sae_variant: str, acts_variant: str, task: dict | None, lm: dict | None, cfg: dict
) -> dict:
    """One SAE on one variant's activations: reconstruction and the spliced losses."""
    stats, outliers = measure(
        pair.sae[sae_variant],
        pair.sets[acts_variant],
        cfg["max_tokens"],
        cfg["batch_rows"],
        pair.device,
        pair.max_norm[acts_variant],
    )
    row = {
        "sae": sae_variant,
        "activations": acts_variant,
        "own": sae_variant == acts_variant,
        **stats.result(),
        "n_outliers": outliers,
        **{f"task_{k}": task[sae_variant][k] if task else None for k in TASK_KEYS},
    }
    if lm is not None:
        row.update({f"lm_{k}": lm[sae_variant][k] for k in LM_KEYS})
    recovered = {"task": row["task_loss_recovered"], "lm": row.get("lm_loss_recovered")}
    log.info(
        "%s SAE on %s activations: explained variance %.3f, L0 %.1f, loss recovered %s (%d outliers)",
        sae_variant,
        acts_variant,
        row["explained_variance"],
        row["l0"],
        ", ".join(f"{k} {v:.3f}" for k, v in recovered.items() if v is not None) or "-",
        outliers,
    )
    return row


def transfer_rows(pair: Pair, docs, classifiers: dict, lm_specs: dict, cfg: dict, eval_cfg: dict) -> list[dict]:
    """Each SAE on each variant's activations: reconstruction and spliced loss recovered."""
    rows, where, size = [], (docs, pair.site, pair.layer), eval_cfg["batch_size"]
    for acts in VARIANTS:  # each variant's model: clean and zero-ablated once, both SAEs spliced in
        limit = pair.max_norm[acts]
        task = (
            task_effects(classifiers[acts], *where, pair.sae, size, pair.device, limit)
            if classifiers.get(acts)
            else None
        )
        lm = lm_effects(lm_specs[acts], *where, pair.sae, size, pair.device, limit) if lm_specs.get(acts) else None
        rows += [_transfer_row(pair, sae_variant, acts, task, lm, cfg) for sae_variant in VARIANTS]
    return rows


def seed_baseline(pair: Pair, seed_dir: str, counts: dict, cfg: dict) -> dict:
    """Match the pretrained SAE to its seed twin on the pretrained tokens: the noise floor, and
    each category's excess over it."""
    twin = Pair(
        {"pretrained": pair.sae["pretrained"], "finetuned": load(seed_dir, pair.device)},
        dict.fromkeys(VARIANTS, pair.sets["pretrained"]),
        pair.site,
        pair.layer,
        pair.device,
        dict.fromkeys(VARIANTS, pair.max_norm["pretrained"]),
    )
    floor = category_counts(match(twin, cfg).table)["pretrained"]
    n = pair.sae["pretrained"].d_sae
    excess = floor_excess(counts["pretrained"]["fractions"], floor["fractions"], n, n)
    below = [c for c, e in excess.items() if e["exceeds_floor"] is False]
    log.info(
        "seed floor: %s; diff within its floor for %s",
        {c: round(f, 3) for c, f in floor["fractions"].items()},
        ", ".join(below) or "no category",
    )
    return {"sae": seed_dir, "floor": floor, "excess": excess, "within_floor": below}


def _changed(table: pl.DataFrame, sae_dirs: dict, n: int) -> pl.DataFrame:
    names = layout.SAE.names
    features = {
        v: pl.read_parquet(Path(sae_dirs[v]) / names["features"], columns=["feature", "top_tokens"]) for v in VARIANTS
    }
    examples = {
        v: pl.read_parquet(
            Path(sae_dirs[v]) / names["examples"], columns=["feature", "kind", "rank", "tokens", "center"]
        )
        for v in VARIANTS
    }
    return most_changed(table, features, examples, n)


def run(
    sae_dirs: dict,
    acts_dirs: dict,
    tokens_path: str,
    classifiers: dict,
    lm_specs: dict,
    cfg: dict,
    eval_cfg: dict,
    out_dir: str,
    seed_sae: str | None = None,
) -> dict:
    """sae_dirs, acts_dirs, classifiers, lm_specs: {variant: ...}; classifiers (unlabelled data) and
    lm_specs (no LM head) may hold None; seed_sae: the pretrained SAE's seed twin (the floor)."""
    started = time.perf_counter()
    pair = _load(sae_dirs, acts_dirs, cfg, pick_device())
    matched = match(pair, cfg)
    counts = category_counts(matched.table)
    log.info(
        "L%d %s: pretrained %s; fine-tuned %s",
        pair.layer,
        pair.site,
        counts["pretrained"]["counts"],
        counts["finetuned"]["counts"],
    )
    baseline = seed_baseline(pair, seed_sae, counts, cfg) if seed_sae else None
    changed = _changed(matched.table, sae_dirs, cfg["n_changed"])
    docs = read_documents(tokens_path).sample(max_docs=eval_cfg["max_docs"], seed=0)
    rows = transfer_rows(pair, docs, classifiers, lm_specs, cfg, eval_cfg)
    out, names = Path(out_dir), layout.DIFF.names
    write_parquet(changed, out / names["changed"])
    write_parquet(pl.DataFrame(rows), out / names["transfer"])
    write_parquet(matched.table, out / names["table"])
    cos, study = matched.cos, pair.sae["pretrained"].cfg["metadata"]["study"]
    summary = {
        **{k: study[k] for k in ("model", "dataset", "sae")},
        "site": pair.site,
        "layer": pair.layer,
        "saes": sae_dirs,
        "n_tokens": matched.n_tokens,
        "thresholds": cfg,
        "sign_convention": "differences are fine-tuned minus pretrained",
        "categories": counts,
        "seed_baseline": baseline,
        "matched_cosine_median": float(np.nanmedian(cos)) if np.isfinite(cos).any() else None,
        "init_cosine_median": matched.init_cos,
        "outlier_norm_limit": pair.max_norm,
        "transfer": rows,
        "seconds": time.perf_counter() - started,
    }
    write_json(summary, out / names["summary"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    for v in VARIANTS:
        parser.add_argument(f"--{v}-sae", required=True, help=f"the {v} SAE folder (with features.parquet)")
        parser.add_argument(f"--{v}-acts", required=True, help=f"held-out activation set of the {v} model")
        parser.add_argument(f"--{v}-classifier", help=f"task classifier folder of the {v} model (labelled data)")
        cli.add_lm(parser, f"--{v}-lm", f"the {v} model")
    parser.add_argument("--tokens", required=True, help="tokens table of the held-out split")
    parser.add_argument("--seed-sae", help="the pretrained SAE's twin of seed + 1 (the noise floor)")
    cli.add_config(parser, "diff config")
    cli.add_config(parser, "sae_eval config (documents for the spliced loss)", "--eval-config")
    parser.add_argument("--out-dir", required=True)
    cli.add_load(parser)
    args = vars(cli.parse_model_job(parser, argv))
    by_variant = {what: {v: args[f"{v}_{what}"] for v in VARIANTS} for what in ("sae", "acts", "classifier", "lm")}
    run(
        by_variant["sae"],
        by_variant["acts"],
        args["tokens"],
        by_variant["classifier"],
        by_variant["lm"],
        args["config"],
        args["eval_config"],
        args["out_dir"],
        args["seed_sae"],
    )
