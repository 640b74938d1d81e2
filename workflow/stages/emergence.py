"""Stage `emergence`: when and where each known abstraction forms in a model trained from scratch.

For a scratch model on its corpus (a dataset of source abstractions), every training snapshot
(step 0, the untrained model, then the log-spaced snapshots of stage `pretrain`; the last is the
final model) runs over a seeded sample of the corpus's train and test boards, and at every stored
(site, layer):

* **token probes**, one per planted concept of the cells, on a seeded sample of ordinary tokens:
  for ``root_<r>`` and ``composite_<c>``, is this object cell (a cell of some root) part of it (so the
  probe must tell roots apart, not objects from background); for ``background`` and ``fuzzy_<m>``,
  is any token;
* **board probes**: the board type (the document label) and, per root and composite, whether the
  board shows it, from the board's mean activation;
* each with its **selectivity** against a control task (`workflow.analysis.emergence`: token
  identity for tokens, the background token for boards);
* **CKA to the final model** on the same test tokens (linear, biased and debiased).

For every SAE recipe of the pretrained variant (the final model) on the corpus at that (site,
layer), on the final model's test activations: each root's and composite's best single latent
(F1 of "fires" as its detector; and at its best threshold, a fraction of its largest activation,
as Karvonen et al. 2024 score board-game SAEs) and the mean correlation coefficient after matching
latents to factors one to one.

Writes ``emergence.parquet`` (a row per step x site x layer x factor), ``cka.parquet``,
``sae_alignment.parquet`` (a row per recipe x site x layer x factor), ``emergence.json`` (the
summary the report and README quote) and ``emergence.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from workflow import layout
from workflow.analysis import alignment
from workflow.analysis import emergence as em
from workflow.models import loading
from workflow.report.figures import emergence as figures
from workflow.runner import cli
from workflow.store.files import read_json, write_json, write_parquet
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)

NAMES = layout.EMERGENCE.names
TOKEN_COLUMNS = ["row", "doc_id", "token_id", "is_special", "concepts", "label"]


def sample(tokens_path: str, max_docs: int, max_tokens: int, concepts: list[str], seed: int) -> em.Sample:
    """A seeded sample of one split's boards (`workflow.analysis.emergence.Sample`)."""
    table = pl.read_parquet(tokens_path, columns=TOKEN_COLUMNS)
    return em.Sample(table, read_documents(tokens_path), max_docs, max_tokens, concepts, seed)


def activations(folder: str, boards: em.Sample, targets: list[tuple[str, int]], batch_size: int, device) -> dict:
    """{(site, layer): (rows, d_model) float32} of a snapshot on a sample's boards, in row order."""
    model = loading.load_base_model(folder, device)
    pad_id = loading.load_tokenizer(folder).pad_token_id
    return em.activations(model, pad_id, boards.docs, targets, batch_size, device)


def snapshots(init: str, trained: str) -> list[tuple[int, str]]:
    """(step, folder) of every snapshot, step 0 first; the last is the final model."""
    steps = read_json(Path(trained) / layout.SCRATCH.names["metrics"])["snapshot_steps"]
    return [(0, init)] + [(s, str(Path(trained) / layout.SCRATCH.names["steps"] / f"step-{s:06d}")) for s in steps]


def sae_codes(saes: dict[str, str], final: dict, test: em.Sample):
    """(recipe, target, codes (n_ordinary, d_sae)) per SAE of the final model (recipe:site:layer ->
    folder), on the test sample's ordinary tokens; one SAE at a time."""
    from workflow import sae as sae_lib
    from workflow.sae.codes import encode_rows

    ordinary = np.flatnonzero(test.ordinary)
    for key, folder in saes.items():
        recipe, target = _sae_key(key)
        model = sae_lib.load(folder)
        yield recipe, target, encode_rows(model, final[(target.site, target.layer)][ordinary].astype(np.float32), 4096)


def run(init, trained, train_tokens, test_tokens, meta_path, targets, saes, cfg, out_dir) -> dict:
    device = loading.pick_device()
    meta = read_json(meta_path)
    concepts = meta["concepts"]
    started = time.perf_counter()
    train = sample(train_tokens, cfg["max_train_docs"], cfg["token_max_tokens"], concepts, cfg["seed"])
    test = sample(test_tokens, cfg["max_test_docs"], cfg["token_max_tokens"], concepts, cfg["seed"] + 1)
    points = snapshots(init, trained)
    final_step, final_folder = points[-1]
    final = activations(final_folder, test, targets, cfg["batch_size"], device)
    rows, cka_rows, detectors = [], [], []
    for step, folder in points:
        a_train = activations(folder, train, targets, cfg["batch_size"], device)
        a_test = final if step == final_step else activations(folder, test, targets, cfg["batch_size"], device)
        got = em.snapshot_rows(step, step == final_step, targets, train, test, a_train, a_test, final, cfg)
        rows, cka_rows, detectors = rows + got[0], cka_rows + got[1], detectors + got[2]
        best, seconds = em.best_selectivity(got[0], targets), time.perf_counter() - started
        log.info("step %d: root token probes' mean selectivity %.3f (best layer), %.0f s", step, best, seconds)
    table, cka_table = pl.DataFrame(rows), pl.DataFrame(cka_rows)
    ordinary = np.flatnonzero(test.ordinary)
    member = {c: test.member[c][ordinary] for c in concepts if c.startswith(em.STRUCTURE)}
    sae_rows, sae_summaries = alignment.sae_alignment(sae_codes(saes, final, test), member)
    sae_table = alignment.table(sae_rows)
    result = em.summary(table, sae_table, sae_summaries, final_step)
    result["detector_f1"] = em.best_detectors(detectors)
    result |= {"corpus": meta["name"], "seconds": time.perf_counter() - started}
    out = Path(out_dir)
    write_parquet(table, out / NAMES["table"])
    write_parquet(cka_table, out / NAMES["cka"])
    write_parquet(sae_table, out / NAMES["sae"])
    figures.plot(table, cka_table, str(out / NAMES["plot"]))
    write_json(result, out / NAMES["summary"])
    decoded = (result["roots_decoded_095"], result["n_roots"], result["seconds"])
    log.info("final model: %d/%d roots decoded at balanced accuracy >= 0.95 at some layer; %.0f s", *decoded)
    return result


def _sae_key(key: str) -> tuple[str, layout.Target]:
    """``topk:resid_post:2`` -> ("topk", Target("resid_post", 2)): the keys of --saes."""
    recipe, _, target = key.partition(":")
    return recipe, layout.Target.parse(target)


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--init", required=True, help="the untrained model folder (step 0)")
    parser.add_argument("--trained", required=True, help="the pretrain folder (steps/, training.json)")
    parser.add_argument("--train-tokens", required=True)
    parser.add_argument("--test-tokens", required=True)
    parser.add_argument("--meta", required=True, help="the corpus's meta.json (its concepts)")
    parser.add_argument("--targets", nargs="+", type=layout.Target.parse, required=True, help="site:layer pairs")
    parser.add_argument("--saes", nargs="*", default=[], help="recipe:site:layer=SAE folder of the final model")
    cli.add_config(parser, "emergence config")
    parser.add_argument("--out-dir", required=True)
    a = parser.parse_args(argv)
    targets = [(t.site, t.layer) for t in a.targets]  # Capture's (site, layer) keys
    run(a.init, a.trained, a.train_tokens, a.test_tokens, a.meta, targets, cli.pairs(a.saes), a.config, a.out_dir)
