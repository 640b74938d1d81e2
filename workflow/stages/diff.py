"""Stage `diff`: what fine-tuning did to the features of one (site, layer, recipe).

Compares the pretrained SAE (trained on the pretrained model's activations) with the fine-tuned
SAE (same recipe, fine-tuned model), on the held-out token rows both activation sets share
(`workflow.analysis.diffing.compare`, whose docstring defines every term): the live features are
matched one-to-one by decoder cosine, each feature of both sides gets a category (retained,
drifted, overwritten or new, dead), ``--seed-sae`` (the pretrained SAE's twin of seed + 1) gives
the noise floor of those categories, and each SAE is transferred to the other variant's
activations (explained variance, L0, spliced task and LM loss recovered).

Output: ``diff.parquet`` (one row per feature of each side), ``changed.parquet`` (the features that
changed most, with their top tokens and examples), ``transfer.parquet`` (each SAE on each
variant's activations) and ``diff.json`` (category counts and fractions, the seed floor, the
median cosines, the outlier limits, the transfer rows). Sign convention: every difference is
fine-tuned minus pretrained.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis import diffing
from workflow.layout import VARIANTS
from workflow.models.loading import pick_device
from workflow.runner import cli
from workflow.store.files import write_json, write_parquet
from workflow.store.tokens import read_documents


def _tables(sae_dirs: dict) -> dict:
    """Each SAE's features and examples tables (stage `features`), the columns `most_changed` lists."""
    names = layout.SAE.names
    columns = {"features": ["feature", "top_tokens"], "examples": ["feature", "kind", "rank", "tokens", "center"]}
    return {
        what: {v: pl.read_parquet(Path(sae_dirs[v]) / names[what], columns=cols) for v in VARIANTS}
        for what, cols in columns.items()
    }


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
    docs = read_documents(tokens_path).sample(max_docs=eval_cfg["max_docs"], seed=0)
    models = {"classifier": classifiers, "lm": lm_specs}
    tables = _tables(sae_dirs)
    found = diffing.compare(sae_dirs, acts_dirs, docs, models, tables, cfg, eval_cfg, pick_device(), seed_sae)
    out, names = Path(out_dir), layout.DIFF.names
    write_parquet(found.changed, out / names["changed"])
    write_parquet(pl.DataFrame(found.transfer), out / names["transfer"])
    write_parquet(found.matched.table, out / names["table"])
    cos, study = found.matched.cos, found.pair.sae["pretrained"].cfg["metadata"]["study"]
    summary = {
        **{k: study[k] for k in ("model", "dataset", "sae")},
        "site": found.pair.site,
        "layer": found.pair.layer,
        "saes": sae_dirs,
        "n_tokens": found.matched.n_tokens,
        "thresholds": cfg,
        "sign_convention": "differences are fine-tuned minus pretrained",
        "categories": found.counts,
        "seed_baseline": found.baseline,
        "matched_cosine_median": float(np.nanmedian(cos)) if np.isfinite(cos).any() else None,
        "init_cosine_median": found.matched.init_cos,
        "outlier_norm_limit": found.pair.max_norm,
        "transfer": found.transfer,
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
