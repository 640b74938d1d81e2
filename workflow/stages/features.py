"""Stage `features`: what each latent of one SAE responds to.

Runs on a held-out activation set of the SAE's own variant (row i is row i of
the tokens table). One encode pass keeps the non-zero codes (`workflow.sae.codes`);
every statistic below is then computed for all features at once with
vectorised numpy over those codes (sorts and bincounts; no loop over features
or over the data):

- ``frequency`` (share of tokens on which the feature fires), ``mean_activation``
  (over all tokens), ``mean_active`` (over the tokens where it fires),
  ``max_activation``;
- ``top_tokens``: the vocabulary tokens with the highest mean activation over
  all their occurrences (tokens seen fewer than ``min_token_count`` times are
  skipped, as one-off tokens make noisy means);
- label association: ``mean:<label>`` (mean activation over the tokens of
  documents of that class) and ``auroc:<label>`` (one-vs-rest AUROC of the
  activation as a score for the class: exact Mann-Whitney with ties, so the
  many zeros count as ties; 0.5 is no association, 1 fires only for the class);
- concept alignment, for datasets with planted concepts: ``precision:<c>``,
  ``recall:<c>``, ``f1:<c>`` of "feature > 0" as a detector of the tokens of
  concept c; features.json names the best feature per concept and, to show
  how a concept is split over features, how many features detect it with
  precision >= 0.8 and the recall of their union;
- ``hist_counts``: a histogram of the feature's non-zero activations,
  ``HIST_BINS`` equal bins from 0 to its ``max_activation`` (the report's
  density plot);
- examples (`examples.parquet`): the ``n_top`` highest activations, and
  ``per_quantile`` random samples from each of ``n_quantiles`` quantile bins of
  the feature's non-zero activations, each with ``window`` tokens of context
  either side (within its document) and the feature's activation on every
  token of the window, so a page can shade each token;
- sentences (`sentences.parquet`): every token of the first ``sentence_docs``
  test documents with the (up to) ``sentence_top`` strongest features firing on
  it, the same documents for every SAE of a (model, dataset), so the report's
  sentence view can set layers and variants side by side.

Plots: ``features.png`` (a heatmap of the most label-associated and most
concept-aligned features: mean activation per class, F1 per concept) and
``sentence.png`` (activation strengths of the strongest features on every
token of one chosen test sentence).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from workflow import layout
from workflow.analysis.features import best_per_concept, describe, read_tokens, sentence_features
from workflow.models.loading import pick_device
from workflow.report.figures.features import heatmap, sentence_plot
from workflow.runner import cli
from workflow.sae import load
from workflow.sae.codes import sparse_codes
from workflow.store.activations import ActivationSet
from workflow.store.files import read_json, write_json, write_parquet

log = logging.getLogger(__name__)


def _inputs(sae_dir: str, acts_dir: str, tokens_path: str, device):
    sae = load(sae_dir, device)
    aset = ActivationSet(acts_dir)
    if aset.d_model != sae.d_in:
        raise ValueError(f"{acts_dir}: d_model {aset.d_model} does not match the SAE's d_in {sae.d_in} ({sae_dir})")
    tokens = read_tokens(tokens_path)
    if len(tokens) != aset.n_rows:
        raise ValueError(f"{tokens_path}: {len(tokens)} rows, but the activation set {acts_dir} has {aset.n_rows}")
    return sae, aset, tokens


def run(sae_dir: str, acts_dir: str, tokens_path: str, meta_path: str, cfg: dict) -> dict:
    started = time.perf_counter()
    device = pick_device()
    sae, aset, tokens = _inputs(sae_dir, acts_dir, tokens_path, device)
    meta = read_json(meta_path)
    label_names, concepts = meta["label_names"], meta.get("concepts") or []
    codes = sparse_codes(sae, aset, cfg["max_tokens"], cfg["batch_rows"], device)
    encoded = time.perf_counter()
    table, examples, extra = describe(codes, tokens, label_names, concepts, cfg)
    best = best_per_concept(codes, table, tokens, concepts, extra["concept_tokens"])
    out, names = Path(sae_dir), layout.SAE.names
    heatmap(table, label_names, concepts, out / names["heatmap"])
    sentence_plot(codes, tokens, cfg["sentence"], out / names["sentence"])
    write_parquet(examples, out / names["examples"])
    write_parquet(sentence_features(codes, tokens, cfg["sentence_docs"], cfg["sentence_top"]), out / names["sentences"])
    write_parquet(table, out / names["features"])
    summary = {
        "sae": sae_dir,
        "study": sae.cfg["metadata"].get("study"),
        "activations": acts_dir,
        "n_tokens": codes.n_rows,
        "d_sae": codes.d_sae,
        "label_names": label_names,
        "concepts": concepts,
        "best_feature_per_concept": best,
        "dead_fraction": float((table["n_active"] == 0).mean()),
        "l0": len(codes.value) / max(codes.n_rows, 1),
        "n_examples": len(examples),
        "encode_seconds": encoded - started,
        "seconds": time.perf_counter() - started,
    }
    write_json(summary, out / names["features_summary"])
    log.info(
        "%s: %d features over %d tokens, %d examples; encode %.1f s, total %.1f s",
        sae_dir,
        codes.d_sae,
        codes.n_rows,
        len(examples),
        summary["encode_seconds"],
        summary["seconds"],
    )
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--sae", required=True, help="SAE folder; outputs are written beside its weights")
    parser.add_argument("--acts", required=True, help="activation set of the same (variant, site, layer)")
    parser.add_argument("--tokens", required=True, help="tokens table of the activation set's split")
    parser.add_argument("--meta", required=True, help="dataset meta.json (label names, concepts)")
    cli.add_config(parser, "features config")
    args = parser.parse_args(argv)
    run(args.sae, args.acts, args.tokens, args.meta, args.config)
