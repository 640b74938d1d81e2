"""The maths of stage `emergence`: where and when known factors become linearly decodable in a
model trained from scratch (the SAE side, how one SAE's latents line up with them, is
`workflow.analysis.alignment`).

Probes. A factor is a binary property of a token (``root_3``: the cell lies in root 3's footprint)
or of a board (``board_type``, multi-class; ``has_root_3``). Each probe is an L2 logistic regression
on standardised activations with balanced class weights, fitted on train and scored on test;
``balanced_accuracy`` is the mean recall over classes (0.5 is chance for a binary factor, whatever
its base rate), ``accuracy`` the plain share correct.

Selectivity (after Hewitt and Liang 2019, "Designing and Interpreting Probes with Control Tasks"):
the same probe is fitted on a *control task* that keeps what something the representation carries
trivially says of the factor and nothing else: the factor's labels permuted at random within each
class of the control (for tokens the token's identity, for boards the board's background token),
separately in each split. ``selectivity`` = balanced accuracy on the factor minus balanced accuracy
on its control: high only where the layer encodes the factor beyond what identity predicts (a cell
of root 3 is not told apart by its token, which other roots use too, but by its neighbours).

A factor counts as formed at the first snapshot where some layer decodes it at balanced accuracy
`FORMED` (`factor_table`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from workflow.store.tokens import Documents, batches

STRUCTURE = ("root_", "composite_")  # concepts with a footprint of cells: the roots and their composites


def control_labels(types: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """The control task: `labels` permuted at random within each class of `types` (token identity,
    background). What identity alone predicts of the factor survives; what context adds does not."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    for t in np.unique(types):
        at = np.flatnonzero(types == t)
        out[at] = labels[rng.permutation(at)]
    return out


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def probe(x_train, y_train, x_test, y_test, C: float = 1.0, max_iter: int = 300) -> dict:
    """Accuracy and balanced accuracy of a balanced-class-weight logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    if len(np.unique(y_train)) < 2 or len(np.unique(y_test)) < 2:
        return {"accuracy": float("nan"), "balanced_accuracy": float("nan")}
    model = LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced", tol=1e-3)
    model.fit(x_train, y_train)
    pred = model.predict(x_test)
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_test, pred)),
    }


def probe_with_control(x_train, y_train, t_train, x_test, y_test, t_test, seed: int, C: float = 1.0) -> dict:
    """`probe` on the factor and on its control task (labels permuted within each type `t_*`, in
    each split), and the selectivity: balanced accuracy on the factor minus on the control."""
    x_train, x_test = _standardise(x_train, x_test)
    task = probe(x_train, y_train, x_test, y_test, C)
    c_train = control_labels(t_train, y_train, seed)
    c_test = control_labels(t_test, y_test, seed + 1)
    control = probe(x_train, c_train, x_test, c_test, C)
    return {
        **task,
        "control_balanced_accuracy": control["balanced_accuracy"],
        "selectivity": task["balanced_accuracy"] - control["balanced_accuracy"],
    }


def detector_f1(x_train, y_train, x_test, y_test, C: float = 1.0, max_iter: int = 300) -> float:
    """F1 of one linear unit (a logistic regression, threshold 0.5) as a detector of a factor's tokens
    among all tokens: the most a single SAE latent, itself a thresholded linear function of the
    activation, could reach on these tokens."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    if len(np.unique(y_train)) < 2:
        return float("nan")
    x_train, x_test = _standardise(x_train, x_test)
    model = LogisticRegression(C=C, max_iter=max_iter, tol=1e-3).fit(x_train, y_train)
    return float(f1_score(y_test, model.predict(x_test), zero_division=0.0))


class Sample:
    """A seeded sample of one split's boards: their documents, the rows of their ordinary tokens, the
    token-probe rows among them, per-token concepts and per-board factors.

    table: the split's tokens table (row, doc_id, token_id, is_special, concepts, label), `docs` its
    documents (`workflow.store.tokens.read_documents`)."""

    def __init__(self, table: pl.DataFrame, docs: Documents, max_docs: int, max_tokens: int, concepts, seed: int):
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
        """The mean activation of each board's ordinary tokens: (rows, d) -> (boards, d)."""
        d = acts.shape[1]
        sums = np.zeros((len(self.labels), d))
        np.add.at(sums, self.doc_of[self.ordinary], acts[self.ordinary])
        counts = np.bincount(self.doc_of[self.ordinary], minlength=len(self.labels))[:, None]
        return sums / np.maximum(counts, 1)


def activations(model, pad_id: int, docs: Documents, targets: list[tuple[str, int]], batch_size: int, device) -> dict:
    """{(site, layer): (rows, d_model) float32} of a model on documents, in row order (padding dropped)."""
    import torch

    from workflow.models.hooks import Capture

    out = {key: [] for key in targets}
    with torch.inference_mode(), Capture(model, targets, stop=True) as capture:
        for _, inputs in batches(docs, batch_size, pad_id):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            captured = capture.run(**inputs)
            lengths = inputs["attention_mask"].sum(1).tolist()
            for key in targets:
                acts = captured[key].float().cpu().numpy()
                out[key] += [acts[j, :n] for j, n in enumerate(lengths)]
    return {key: np.concatenate(parts) for key, parts in out.items()}


def detector_rows(site, layer, train: Sample, test: Sample, a_train, a_test, cfg) -> list[dict]:
    """Per structural factor: one linear unit's F1 as its detector among all ordinary tokens (the
    bound of an SAE latent's F1 there)."""
    rows = []
    for c in train.member:
        if c.startswith(STRUCTURE):
            yt, ys = train.member[c][train.probe_rows], test.member[c][test.probe_rows]
            f1 = detector_f1(a_train[train.probe_rows], yt, a_test[test.probe_rows], ys, cfg["C"])
            rows.append({"site": site, "layer": layer, "factor": c, "detector_f1": f1})
    return rows


def probe_rows(step, site, layer, train: Sample, test: Sample, a_train, a_test, cfg) -> list[dict]:
    """Per concept a token probe, per board factor a board probe, each with its selectivity."""
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
        scores = probe_with_control(xt, yt, tt, xs, ys, ts, cfg["seed"], cfg["C"])
        rows.append({**base, "level": "token", "factor": c, "base_rate": float(ys.mean()), **scores})
    pt, ps = train.pooled(a_train), test.pooled(a_test)
    for name, yt in train.board_factors.items():
        ys = test.board_factors[name]
        scores = probe_with_control(pt, yt, train.background, ps, ys, test.background, cfg["seed"], cfg["C"])
        rows.append({**base, "level": "board", "factor": name, "base_rate": float(np.mean(ys == ys.max())), **scores})
    return rows


def cka(x: np.ndarray, y: np.ndarray) -> dict:
    """Linear CKA of two representations of the same tokens, biased and debiased."""
    import torch

    from workflow.analysis.similarity import SimilarityAccumulator

    acc = SimilarityAccumulator(x.shape[1], y.shape[1])
    acc.update(torch.from_numpy(x).double(), torch.from_numpy(y).double())
    r = acc.result()
    return {"cka_biased": r["cka_biased"], "cka_debiased": r["cka_debiased"]}


def snapshot_rows(step, final: bool, targets, train: Sample, test: Sample, a_train, a_test, a_final, cfg) -> tuple:
    """One snapshot at every (site, layer): its probe rows, its CKA rows to the final model (on the
    test sample's ordinary tokens) and, on the final model only, its detector rows.
    a_*: {(site, layer): (rows, d_model)} of the train and test samples, and the final model's test."""
    rows, cka_rows, detectors = [], [], []
    for site, layer in targets:
        key = (site, layer)
        rows += probe_rows(step, site, layer, train, test, a_train[key], a_test[key], cfg)
        if final:
            detectors += detector_rows(site, layer, train, test, a_train[key], a_test[key], cfg)
        similarity = cka(a_test[key][test.ordinary], a_final[key][test.ordinary])
        cka_rows.append({"step": step, "site": site, "layer": layer, **similarity})
    return rows, cka_rows, detectors


def best_selectivity(rows: list[dict], targets) -> float:
    """The root token probes' mean selectivity at the best layer (of one snapshot's rows)."""
    roots = [r for r in rows if r["level"] == "token" and r["factor"].startswith("root_")]
    return max(np.mean([r["selectivity"] for r in roots if r["layer"] == layer]) for _, layer in targets)


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


def summary(table: pl.DataFrame, sae_rows: pl.DataFrame, sae_summaries: list, final_step: int) -> dict:
    """What the report and README quote: per root and composite `factor_table`; per SAE recipe, how
    many roots one latent detects at F1 0.8 (firing, and at its best threshold)."""
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
