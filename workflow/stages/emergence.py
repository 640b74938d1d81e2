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
from workflow.analysis import emergence as em
from workflow.models import loading
from workflow.models.hooks import Capture
from workflow.runner import cli
from workflow.store.files import read_json, write_json, write_parquet
from workflow.store.tokens import batches, read_documents

log = logging.getLogger(__name__)

NAMES = layout.EMERGENCE.names
STRUCTURE = ("root_", "composite_")  # concepts the SAE alignment scores


class Sample:
    """A seeded sample of one split's boards: their documents, the rows of their ordinary tokens, the
    token-probe rows among them, per-token concepts and per-board factors."""

    def __init__(self, tokens_path: str, max_docs: int, max_tokens: int, concepts: list[str], seed: int):
        table = pl.read_parquet(tokens_path, columns=["row", "doc_id", "token_id", "is_special", "concepts", "label"])
        docs = read_documents(tokens_path)
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.permutation(len(docs.token_ids))[:max_docs])
        self.docs = docs.subset(keep)
        rows = np.concatenate([np.arange(docs.offsets[i], docs.offsets[i + 1]) for i in keep])
        sub = table[rows]
        self.ordinary = ~sub["is_special"].to_numpy()
        self.doc_of = np.repeat(np.arange(len(keep)), np.diff(self.docs.offsets))
        self.token_id = sub["token_id"].to_numpy()
        concept_lists = sub["concepts"]
        self.member = {c: concept_lists.list.contains(c).to_numpy() for c in concepts}
        ordinary_rows = np.flatnonzero(self.ordinary)
        n = min(max_tokens, len(ordinary_rows))
        self.probe_rows = np.sort(rng.choice(ordinary_rows, n, replace=False))
        in_root = np.zeros(len(self.token_id), bool)
        for c in concepts:
            if c.startswith("root_"):
                in_root |= self.member[c]
        self.object_rows = self.probe_rows[in_root[self.probe_rows]]  # probe rows inside a root's footprint
        self.labels = self.docs.labels
        self.board_factors = {"board_type": self.labels}
        for c in concepts:
            if c.startswith(STRUCTURE):
                present = np.zeros(len(keep), bool)
                present[self.doc_of[self.member[c]]] = True
                self.board_factors[f"has_{c}"] = present.astype(int)
        # each board's background token: its commonest ordinary token
        self.background = np.array(
            [np.bincount(self.token_id[(self.doc_of == d) & self.ordinary]).argmax() for d in range(len(keep))]
        )

    def pooled(self, acts: np.ndarray) -> np.ndarray:
        """The mean activation of each board's ordinary tokens."""
        d = acts.shape[1]
        sums = np.zeros((len(self.labels), d))
        np.add.at(sums, self.doc_of[self.ordinary], acts[self.ordinary])
        counts = np.bincount(self.doc_of[self.ordinary], minlength=len(self.labels))[:, None]
        return sums / np.maximum(counts, 1)


def activations(folder: str, sample: Sample, targets: list[tuple[str, int]], batch_size: int, device) -> dict:
    """{(site, layer): (rows, d_model) float32} of a snapshot on a sample's boards, in row order."""
    import torch

    model = loading.load_base_model(folder, device)
    pad_id = loading.load_tokenizer(folder).pad_token_id
    out = {key: [] for key in targets}
    with torch.inference_mode(), Capture(model, targets, stop=True) as capture:
        for _, inputs in batches(sample.docs, batch_size, pad_id):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            captured = capture.run(**inputs)
            lengths = inputs["attention_mask"].sum(1).tolist()
            for key in targets:
                acts = captured[key].float().cpu().numpy()
                out[key] += [acts[j, :n] for j, n in enumerate(lengths)]
    return {key: np.concatenate(parts) for key, parts in out.items()}


def snapshots(init: str, trained: str) -> list[tuple[int, str]]:
    """(step, folder) of every snapshot, step 0 first; the last is the final model."""
    steps = read_json(Path(trained) / layout.SCRATCH.names["metrics"])["snapshot_steps"]
    return [(0, init)] + [(s, str(Path(trained) / layout.SCRATCH.names["steps"] / f"step-{s:06d}")) for s in steps]


def detector_rows(site, layer, train: Sample, test: Sample, a_train, a_test, cfg) -> list[dict]:
    """Per structural factor: one linear unit's F1 as its detector among all ordinary tokens (the
    bound of an SAE latent's F1 there)."""
    rows = []
    for c in train.member:
        if c.startswith(STRUCTURE):
            yt, ys = train.member[c][train.probe_rows], test.member[c][test.probe_rows]
            f1 = em.detector_f1(a_train[train.probe_rows], yt, a_test[test.probe_rows], ys, cfg["C"])
            rows.append({"site": site, "layer": layer, "factor": c, "detector_f1": f1})
    return rows


def probe_rows(step, site, layer, train: Sample, test: Sample, a_train, a_test, cfg) -> list[dict]:
    rows = []
    base = {"step": step, "site": site, "layer": layer}
    for c in train.member:
        # which root (composite) an object cell belongs to: among the cells of some root; the rest
        # (background, fuzzy modes) among every ordinary token
        rt, rs = (
            (train.object_rows, test.object_rows) if c.startswith(STRUCTURE) else (train.probe_rows, test.probe_rows)
        )
        xt, xs, tt, ts = a_train[rt], a_test[rs], train.token_id[rt], test.token_id[rs]
        yt, ys = train.member[c][rt].astype(int), test.member[c][rs].astype(int)
        scores = em.probe_with_control(xt, yt, tt, xs, ys, ts, cfg["seed"], cfg["C"])
        rows.append({**base, "level": "token", "factor": c, "base_rate": float(ys.mean()), **scores})
    pt, ps = train.pooled(a_train), test.pooled(a_test)
    for name, yt in train.board_factors.items():
        ys = test.board_factors[name]
        scores = em.probe_with_control(pt, yt, train.background, ps, ys, test.background, cfg["seed"], cfg["C"])
        rows.append({**base, "level": "board", "factor": name, "base_rate": float(np.mean(ys == ys.max())), **scores})
    return rows


def cka(x: np.ndarray, y: np.ndarray) -> dict:
    import torch

    from workflow.analysis.similarity import SimilarityAccumulator

    acc = SimilarityAccumulator(x.shape[1], y.shape[1])
    acc.update(torch.from_numpy(x).double(), torch.from_numpy(y).double())
    r = acc.result()
    return {"cka_biased": r["cka_biased"], "cka_debiased": r["cka_debiased"]}


THRESHOLD_COLUMNS = ("threshold_latent", "threshold_f1", "threshold_fraction")


def sae_alignment(saes: dict[str, str], final: dict, test: Sample, concepts: list[str]) -> tuple[list, list]:
    """Per SAE (recipe:site:layer -> folder): each structural factor's best latent, and the MCC."""
    from workflow import sae as sae_lib
    from workflow.sae.codes import encode_rows

    factors = [c for c in concepts if c.startswith(STRUCTURE)]
    rows, summaries = [], []
    ordinary = np.flatnonzero(test.ordinary)
    for key, folder in saes.items():
        recipe, site, layer = key.split(":")
        model = sae_lib.load(folder)
        codes = encode_rows(model, final[(site, int(layer))][ordinary].astype(np.float32), 4096)
        indicators = np.stack([test.member[c][ordinary] for c in factors], 1)
        score, matched, corr = em.mcc(codes, indicators)
        for j, c in enumerate(factors):
            latent, f1, precision, recall = em.best_f1(codes, indicators[:, j])
            at_threshold = zip(THRESHOLD_COLUMNS, em.best_threshold_f1(codes, indicators[:, j]))
            rows.append(
                {
                    "sae": recipe,
                    "site": site,
                    "layer": int(layer),
                    "factor": c,
                    "latent": latent,
                    "f1": f1,
                    "precision": precision,
                    "recall": recall,
                    **dict(at_threshold),
                    "matched_latent": int(matched[j]),
                    "matched_correlation": float(corr[j]),
                }
            )
        summaries.append({"sae": recipe, "site": site, "layer": int(layer), "mcc": score, "d_sae": codes.shape[1]})
        roots = [r["f1"] for r in rows[-len(factors) :] if r["factor"].startswith("root_")]
        log.info("%s %s L%s: MCC %.3f; roots' best F1 min %.3f", recipe, site, layer, score, min(roots))
    return rows, summaries


FORMED = 0.95  # balanced accuracy at which a factor counts as decoded ("formed at" its first such step)


def factor_table(table: pl.DataFrame, final_step: int, prefix: str) -> pl.DataFrame:
    """Per token-level factor of `prefix`: on the final model, the best layer's balanced accuracy,
    accuracy and selectivity; and the first snapshot step at which some layer decodes it at FORMED."""
    token = table.filter((pl.col("level") == "token") & pl.col("factor").str.starts_with(prefix))
    final = (
        token.filter(pl.col("step") == final_step)
        .group_by("factor")
        .agg(
            pl.col("balanced_accuracy").max().alias("best_balanced_accuracy"),
            pl.col("accuracy").sort_by("balanced_accuracy").last().alias("best_accuracy"),
            pl.col("selectivity").sort_by("balanced_accuracy").last().alias("selectivity"),
            pl.col("layer").sort_by("balanced_accuracy").last().alias("best_layer"),
        )
    )
    formed = (
        token.filter(pl.col("balanced_accuracy") >= FORMED)
        .group_by("factor")
        .agg(pl.col("step").min().alias("formed_at"))
    )
    return final.join(formed, on="factor", how="left").sort(
        pl.col("factor").str.extract(r"_(\d+)$").cast(pl.Int64, strict=False)
    )


def summary(
    table: pl.DataFrame, cka_table: pl.DataFrame, sae_rows: pl.DataFrame, sae_summaries: list, final_step: int
) -> dict:
    best = factor_table(table, final_step, "root_")
    out = {
        "final_step": final_step,
        "formed_threshold": FORMED,
        "roots": best.to_dicts(),
        "composites": factor_table(table, final_step, "composite_").to_dicts(),
        "roots_decoded_095": int((best["best_balanced_accuracy"] >= 0.95).sum()),
        "n_roots": len(best),
        "snapshots": sorted(table["step"].unique().to_list()),
        "sae": sae_summaries,
    }
    if len(sae_rows):
        roots = sae_rows.filter(pl.col("factor").str.starts_with("root_"))
        per = roots.group_by(["sae", "factor"]).agg(pl.col("f1", "threshold_f1").max()).sort(["sae", "factor"])
        out["sae_roots"] = {
            sae: {
                "min_best_f1": float(g["f1"].min()),
                "roots_f1_08": int((g["f1"] >= 0.8).sum()),
                "min_threshold_f1": float(g["threshold_f1"].min()),
                "roots_threshold_f1_08": int((g["threshold_f1"] >= 0.8).sum()),
                "n_roots": len(g),
            }
            for (sae,), g in per.group_by(["sae"], maintain_order=True)
        }
    return out


def best_detectors(rows: list[dict]) -> dict:
    """factor -> the best layer's linear-unit F1 and that (site, layer)."""
    best: dict = {}
    for r in rows:
        if r["factor"] not in best or r["detector_f1"] > best[r["factor"]]["f1"]:
            best[r["factor"]] = {"f1": r["detector_f1"], "site": r["site"], "layer": r["layer"]}
    return best


def plot(table: pl.DataFrame, cka_table: pl.DataFrame, path: str) -> None:
    from workflow.report.figures import canvas as plots

    plt = plots.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    groups = [
        ("token", "root_", "root cells (token probes)"),
        # board probes (has_root_r) read roots from the bag of tokens already at step 0: composites are
        # the informative second level
        ("token", "composite_", "composite cells (token probes)"),
    ]
    keys = table.select("site", "layer").unique().sort(["layer", "site"]).rows()
    for ax, (level, prefix, title) in zip(axes, groups):
        part = table.filter((pl.col("level") == level) & pl.col("factor").str.starts_with(prefix))
        for site, layer in keys:
            g = (
                part.filter((pl.col("site") == site) & (pl.col("layer") == layer))
                .group_by("step")
                .agg(pl.col("selectivity").mean())
                .sort("step")
            )
            ax.plot(
                np.maximum(g["step"].to_numpy(), 0.5), g["selectivity"].to_numpy(), marker="o", label=f"{site} L{layer}"
            )
        ax.set(xscale="log", xlabel="training step (0 shown at 0.5)", ylabel="mean selectivity", title=title)
        ax.axhline(0, color="grey", lw=0.5)
    ax = axes[2]
    for site, layer in keys:
        g = cka_table.filter((pl.col("site") == site) & (pl.col("layer") == layer)).sort("step")
        ax.plot(np.maximum(g["step"].to_numpy(), 0.5), g["cka_biased"].to_numpy(), marker="o", label=f"{site} L{layer}")
    ax.set(
        xscale="log",
        xlabel="training step",
        ylabel="linear CKA (biased)",
        title="CKA to the final model",
        ylim=(0, 1.02),
    )
    axes[0].legend(fontsize=7)
    plots.save(fig, path)


def run(init, trained, train_tokens, test_tokens, meta_path, targets, saes, cfg, out_dir) -> dict:
    device = loading.pick_device()
    meta = read_json(meta_path)
    concepts = meta["concepts"]
    started = time.perf_counter()
    train = Sample(train_tokens, cfg["max_train_docs"], cfg["token_max_tokens"], concepts, cfg["seed"])
    test = Sample(test_tokens, cfg["max_test_docs"], cfg["token_max_tokens"], concepts, cfg["seed"] + 1)
    points = snapshots(init, trained)
    final_step, final_folder = points[-1]
    final = activations(final_folder, test, targets, cfg["batch_size"], device)
    rows, cka_rows, detectors = [], [], []
    for step, folder in points:
        a_train = activations(folder, train, targets, cfg["batch_size"], device)
        a_test = final if step == final_step else activations(folder, test, targets, cfg["batch_size"], device)
        for site, layer in targets:
            key = (site, layer)
            rows += probe_rows(step, site, layer, train, test, a_train[key], a_test[key], cfg)
            if step == final_step:
                detectors += detector_rows(site, layer, train, test, a_train[key], a_test[key], cfg)
            ordinary = test.ordinary
            cka_rows.append(
                {"step": step, "site": site, "layer": layer, **cka(a_test[key][ordinary], final[key][ordinary])}
            )
        roots = [r for r in rows if r["step"] == step and r["level"] == "token" and r["factor"].startswith("root_")]
        log.info(
            "step %d: root token probes' mean selectivity %.3f (best layer), %.0f s",
            step,
            max(np.mean([r["selectivity"] for r in roots if r["layer"] == layer]) for _, layer in targets),
            time.perf_counter() - started,
        )
    table, cka_table = pl.DataFrame(rows), pl.DataFrame(cka_rows)
    sae_rows, sae_summaries = sae_alignment(saes, final, test, concepts)
    sae_table = (
        pl.DataFrame(sae_rows)
        if sae_rows
        else pl.DataFrame(schema={"sae": pl.Utf8, "factor": pl.Utf8, "f1": pl.Float64})
    )
    result = summary(table, cka_table, sae_table, sae_summaries, final_step)
    result["detector_f1"] = best_detectors(detectors)
    result |= {"corpus": meta["name"], "seconds": time.perf_counter() - started}
    out = Path(out_dir)
    write_parquet(table, out / NAMES["table"])
    write_parquet(cka_table, out / NAMES["cka"])
    write_parquet(sae_table, out / NAMES["sae"])
    plot(table, cka_table, str(out / NAMES["plot"]))
    write_json(result, out / NAMES["summary"])
    log.info(
        "final model: %d/%d roots decoded at balanced accuracy >= 0.95 at some layer; %.0f s",
        result["roots_decoded_095"],
        result["n_roots"],
        result["seconds"],
    )
    return result


def _target(text: str) -> tuple[str, int]:
    site, _, layer = text.partition(":")
    return site, int(layer)


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--init", required=True, help="the untrained model folder (step 0)")
    parser.add_argument("--trained", required=True, help="the pretrain folder (steps/, training.json)")
    parser.add_argument("--train-tokens", required=True)
    parser.add_argument("--test-tokens", required=True)
    parser.add_argument("--meta", required=True, help="the corpus's meta.json (its concepts)")
    parser.add_argument("--targets", nargs="+", type=_target, required=True, help="site:layer pairs")
    parser.add_argument("--saes", nargs="*", default=[], help="recipe:site:layer=SAE folder of the final model")
    cli.add_config(parser, "emergence config")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    saes = cli.pairs(args.saes)
    run(
        args.init,
        args.trained,
        args.train_tokens,
        args.test_tokens,
        args.meta,
        args.targets,
        saes,
        args.config,
        args.out_dir,
    )
