"""Stage `methods`: the diffing methods side by side at one (model, dataset, site, layer, recipe).

One row per feature of the pretrained SAE: its category under the matching of two SAEs
(stage `diff`), under stage-wise fine-tuning (stage `stagewise`), and, for each crosscoder at
this (site, layer), the crosscoder latent whose pretrained-side decoder points closest to the
feature's decoder (cosine ``<name>_cos``), that latent's class and its category in the same
terms (kept / changed / removed / new / dead; `workflow.analysis.crosscoding.categories`).

Agreement between every two methods over the features both label (dead features left out):
the confusion matrix and Cohen's kappa (`sklearn.metrics`); a crosscoder's label counts only
where its latent points at the feature within `match_cosine` (`workflow.analysis.agreement`).

Output: ``methods.parquet`` and ``methods.json``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from workflow import layout
from workflow.analysis import agreement
from workflow.runner import cli
from workflow.sae import load
from workflow.sae.crosscoder import load as load_crosscoder
from workflow.store.files import write_json, write_parquet


def _crosscoder(folder: str) -> tuple:
    """A crosscoder's pretrained-side decoder (raw space, as the SAE's decoder) and its latents table."""
    pre_side = load_crosscoder(folder).saelens_tensors()["W_dec"][0].numpy()
    return pre_side, pl.read_parquet(Path(folder) / layout.CROSSCODER.names["latents"])


def run(diff_dir: str, sae_dir: str, stagewise_dir: str | None, crosscoders: dict, cfg: dict, out: str) -> dict:
    """crosscoders: {name: crosscoder folder} at this (site, layer); cfg: the diff section."""
    diff = pl.read_parquet(Path(diff_dir) / layout.DIFF.names["table"]).filter(pl.col("side") == "pretrained")
    movement = pl.read_parquet(Path(stagewise_dir) / layout.STAGEWISE.names["movement"]) if stagewise_dir else None
    decoder = load(sae_dir).W_dec.detach().numpy()
    loaded = {name: _crosscoder(folder) for name, folder in crosscoders.items()}
    rows, methods = agreement.method_table(diff, movement, decoder, loaded)
    out_dir = Path(out)
    write_parquet(rows, out_dir / layout.METHODS.names["table"])
    summary = agreement.summary(rows, methods, cfg["match_cosine"])
    write_json(summary, out_dir / layout.METHODS.names["summary"])
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--diff", required=True, help="the diff folder (diff.parquet)")
    parser.add_argument("--sae", required=True, help="the pretrained SAE folder")
    parser.add_argument("--stagewise", help="the stage-wise folder (movement.parquet)")
    parser.add_argument("--crosscoders", nargs="*", default=[], help="NAME=folder of each crosscoder here")
    cli.add_config(parser, "diff section")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    run(args.diff, args.sae, args.stagewise, cli.pairs(args.crosscoders), args.config, args.out)
