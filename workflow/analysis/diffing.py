"""What fine-tuning did to the features of one (site, layer, recipe): two SAEs matched, the seed floor
of that matching, and each SAE transferred to the other variant's activations.

The pretrained SAE (trained on the pretrained model's activations) and the fine-tuned SAE (same
recipe, fine-tuned model) are compared on the held-out token rows both activation sets share
(`compare` does it all; stage `diff` loads and writes).

Matching: decoder rows are normalised and the live features (those that fire on the test
tokens) are paired one-to-one by maximum total cosine (optimal assignment,
`scipy.optimize.linear_sum_assignment`; the cosine matrix takes 4 bytes x d_sae^2). For each
pair, ``act_corr`` is the Pearson correlation of the two features' activations on the same token
rows (pretrained SAE on pretrained activations against fine-tuned SAE on fine-tuned activations).
``best_cos`` is each feature's largest cosine with any live feature of the other side, one-to-one
or not: a feature that split in two keeps one partner, and its best cosine shows the other half.

Categories (thresholds under `diff:` in the config). A pretrained feature is
- ``dead`` if it never fires on the pretrained activations;
- ``retained`` if its partner fires, decoder cosine >= retained_cosine and act_corr >=
  retained_correlation (same direction, same tokens);
- ``drifted`` if its partner fires and cosine >= match_cosine, but it is not retained (the
  direction turned or the tokens it fires on changed);
- ``overwritten`` otherwise: its one-to-one partner points elsewhere (cosine < match_cosine) or
  there is none.
A fine-tuned feature is ``dead`` if it never fires on the fine-tuned activations, shares the
category of its partner if that is retained or drifted, and is ``new`` otherwise.
(`workflow.analysis.matching` holds the per-feature maths.)

Both SAEs of a recipe start from the same seeded initialisation, so a latent the data hardly moves
stays paired with its twin; ``init_cosine_median`` says how far each decoder moved from that start
(a warning is logged when the median stays above match_cosine).

Seed baseline: a second SAE of the recipe trained on the pretrained variant with seed + 1, matched
to the first in the same way on the same tokens. Its categories are the noise floor: the share
"retained" between two seeds is the most fine-tuning could show, the share "drifted" between seeds
is what training noise alone produces. Each category's share, its floor and the difference with a
Wald 95% interval (`matching.floor_excess`), and whether the diff exceeds its floor.

Sign convention: every difference is fine-tuned minus pretrained (``delta_frequency`` > 0: fires
more after fine-tuning).

SAE transfer (Kissane et al. 2024): each SAE on each variant's activations. Explained variance, L0
and spliced loss recovered (in the task classifier of the activations' variant,
`workflow.analysis.splices`) of the pretrained SAE on fine-tuned activations, and the reverse, next
to each SAE on its own model, all computed the same way. Outlier-norm tokens (norm >
outlier_norm_factor x the median token norm of the set, e.g. GPT-2's first position) are left out
of the firing frequencies, the correlations and the transfer metrics, and keep their clean value
when splicing, as the literature leaves out BOS. The own-model rows of the transfer table therefore
equal `evaluate_sae`'s numbers only where no token is an outlier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

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
from workflow.analysis.splices import lm_effects, task_effects
from workflow.layout import VARIANTS
from workflow.sae import load
from workflow.sae.metrics import measure
from workflow.sae.training import initial_sae
from workflow.store.activations import ActivationSet

log = logging.getLogger(__name__)

TASK_KEYS = ("loss_clean", "loss_spliced", "loss_zero", "loss_recovered", "accuracy_clean", "accuracy_spliced", "kl")
LM_KEYS = ("loss_clean", "loss_spliced", "loss_recovered", "kl")


@dataclass
class Pair:
    """Both variants' SAEs and held-out activation sets at one (site, layer), each set's outlier limit, and
    the seed twin of the pretrained SAE."""

    sae: dict  # variant -> SAE
    sets: dict  # variant -> ActivationSet
    site: str
    layer: int
    max_norm: dict = field(default_factory=dict)  # variant -> outlier norm limit of its set
    twin: object = None  # the pretrained SAE's seed twin (the floor), where one was given


@dataclass
class Matched:
    """The matching of the two SAEs' features."""

    table: pl.DataFrame  # one row per feature of each side: partner, cosine, correlation, frequencies, category
    cos: np.ndarray  # (d_sae_pre,) decoder cosine of each pretrained feature with its partner (NaN: none)
    init_cos: dict  # variant -> median cosine of its decoder rows with the shared initialisation
    n_tokens: int  # token rows compared (outliers left out)


@dataclass
class Comparison:
    """All that `compare` found for one (site, layer, recipe)."""

    pair: Pair
    matched: Matched
    counts: dict  # category_counts of matched.table
    baseline: dict | None  # seed_baseline, where a seed twin was given
    changed: pl.DataFrame  # most_changed: the features that changed most, with their top tokens and examples
    transfer: list[dict]  # transfer_rows: each SAE on each variant's activations


def compare(
    sae_dirs: dict, acts_dirs: dict, docs, models: dict, tables: dict, cfg: dict, eval_cfg: dict, device, seed_sae=None
) -> Comparison:
    """The whole diff of two SAE folders ({variant: folder}) on their held-out activation sets
    ({variant: folder}). `docs`: the held-out documents (`Documents`) the spliced losses run on;
    `models`: {"classifier": {variant: folder or None (unlabelled data)}, "lm": {variant:
    `Plan.lm_spec` or None (no LM head)}}; `tables`: {"features": {variant: features table},
    "examples": {variant: examples table}} of each SAE (stage `features`); `cfg`: the diff section;
    `eval_cfg`: the sae_eval section; seed_sae: the pretrained SAE's seed twin (the floor)."""
    pair = load_pair(sae_dirs, acts_dirs, cfg, device, seed_sae)
    matched = match(pair, cfg, device)
    counts = category_counts(matched.table)
    log.info(
        "L%d %s: pretrained %s; fine-tuned %s",
        pair.layer,
        pair.site,
        counts["pretrained"]["counts"],
        counts["finetuned"]["counts"],
    )
    baseline = seed_baseline(pair, seed_sae, counts, cfg, device) if seed_sae else None
    changed = most_changed(matched.table, tables["features"], tables["examples"], cfg["n_changed"])
    rows = transfer_rows(pair, docs, models["classifier"], models["lm"], cfg, eval_cfg, device)
    return Comparison(pair, matched, counts, baseline, changed, rows)


def load_pair(sae_dirs: dict, acts_dirs: dict, cfg: dict, device, seed_sae: str | None = None) -> Pair:
    """Both SAEs (and the seed twin) and both activation sets, checked to fit each other and to hold the
    same token rows."""
    sae = {v: load(sae_dirs[v], device) for v in VARIANTS}
    twin = load(seed_sae, device) if seed_sae else None
    sets = {v: ActivationSet(acts_dirs[v]) for v in VARIANTS}
    if sets["pretrained"].n_rows != sets["finetuned"].n_rows:
        raise ValueError(f"{acts_dirs['pretrained']} and {acts_dirs['finetuned']} hold different token rows")
    for v in VARIANTS:
        if sets[v].d_model != sae[v].d_in:
            raise ValueError(f"{acts_dirs[v]}: d_model {sets[v].d_model} does not match the SAE's d_in {sae[v].d_in}")
    study = sae["pretrained"].cfg["metadata"]["study"]
    factor, tokens, rows = cfg["outlier_norm_factor"], cfg["max_tokens"], cfg["batch_rows"]
    max_norm = {v: outlier_limit(sets[v], factor, tokens, rows) for v in VARIANTS}
    return Pair(sae, sets, study["site"], study["layer"], max_norm, twin)


def init_cosines(sae: dict) -> dict:
    """Median cosine between each SAE's decoder rows and the seeded initialisation both started from."""
    start = initial_sae(sae["pretrained"].recipe, sae["pretrained"].d_in).W_dec.detach().numpy()
    start = start / np.maximum(np.linalg.norm(start, axis=1, keepdims=True), 1e-12)
    out = {}
    for v in VARIANTS:
        w = sae[v].W_dec.detach().cpu().numpy()
        out[v] = float(np.median((w * start).sum(1) / np.maximum(np.linalg.norm(w, axis=1), 1e-12)))
    return out


def match(pair: Pair, cfg: dict, device) -> Matched:
    """Pair the two SAEs' live features and categorise every feature of both."""
    sae, sets, tokens, rows = pair.sae, pair.sets, cfg["max_tokens"], cfg["batch_rows"]
    live = {v: firing_frequency(sae[v], sets[v], pair.max_norm[v], tokens, rows, device) > 0 for v in VARIANTS}
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
        *(sae[v] for v in VARIANTS), *(sets[v] for v in VARIANTS), partner, tokens, rows, pair.max_norm, device
    )
    pre_cat, ft_cat = categorize(partner, cos, paired["corr"], paired["freq_pre"], paired["freq_ft"], cfg)
    table = diff_table(partner, cos, paired, pre_cat, ft_cat, best)
    return Matched(table, cos, init_cos, paired["n_tokens"])


def seed_baseline(pair: Pair, seed_dir: str, counts: dict, cfg: dict, device) -> dict:
    """Match the pretrained SAE to its seed twin (`pair.twin`, from `seed_dir`) on the pretrained tokens:
    the noise floor, and each category's excess over it."""
    twins = Pair(
        {"pretrained": pair.sae["pretrained"], "finetuned": pair.twin},
        dict.fromkeys(VARIANTS, pair.sets["pretrained"]),
        pair.site,
        pair.layer,
        dict.fromkeys(VARIANTS, pair.max_norm["pretrained"]),
    )
    floor = category_counts(match(twins, cfg, device).table)["pretrained"]
    n = pair.sae["pretrained"].d_sae
    excess = floor_excess(counts["pretrained"]["fractions"], floor["fractions"], n, n)
    below = [c for c, e in excess.items() if e["exceeds_floor"] is False]
    log.info(
        "seed floor: %s; diff within its floor for %s",
        {c: round(f, 3) for c, f in floor["fractions"].items()},
        ", ".join(below) or "no category",
    )
    return {"sae": seed_dir, "floor": floor, "excess": excess, "within_floor": below}


def transfer_rows(pair: Pair, docs, classifiers: dict, lm_specs: dict, cfg: dict, eval_cfg: dict, device) -> list[dict]:
    """Each SAE on each variant's activations: reconstruction and spliced loss recovered."""
    rows, size = [], eval_cfg["batch_size"]
    for acts in VARIANTS:  # each variant's model: clean and zero-ablated once, both SAEs spliced in
        site, layer, saes, limit = pair.site, pair.layer, pair.sae, pair.max_norm[acts]
        task = (
            task_effects(classifiers[acts], docs, site, layer, saes, size, device, limit)
            if classifiers.get(acts)
            else None
        )
        lm = lm_effects(lm_specs[acts], docs, site, layer, saes, size, device, limit) if lm_specs.get(acts) else None
        rows += [_transfer_row(pair, sae_variant, acts, task, lm, cfg, device) for sae_variant in VARIANTS]
    return rows


def _transfer_row(
    pair: Pair, sae_variant: str, acts_variant: str, task: dict | None, lm: dict | None, cfg: dict, device
) -> dict:
    """One SAE on one variant's activations: reconstruction and the spliced losses."""
    stats, outliers = measure(
        pair.sae[sae_variant],
        pair.sets[acts_variant],
        cfg["max_tokens"],
        cfg["batch_rows"],
        device,
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
