"""A diff whose answer is known: two activation sets built from one dictionary of atoms.

Both sets are sparse combinations of unit atoms on the same rows (row i of one is row i of the
other, as two variants' activations of the same tokens). The pretrained set uses `n_atoms`
random atoms; in the fine-tuned set each atom is, by a seeded draw of the shares given,

- ``kept``: the same atom, with the same codes;
- ``changed``: rotated by `angle` degrees (its cosine with the original is cos(angle)), same codes;
- ``removed``: gone (its codes are dropped);

and ``new`` atoms (as many as `shares["new"] x n_atoms`) appear with codes of their own. Each
atom fires on a row with probability `k / n_atoms` (so about k atoms per row), with a magnitude
drawn from [0.5, 1.5]; a shared offset and Gaussian noise are added.

`truth()` gives each atom's category, over the pretrained atoms then the new ones; `score`
compares any method's per-atom answer with it (precision, recall and F1 per category, Cohen's
kappa). How a method's features map to atoms: `atom_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATEGORIES = ("kept", "changed", "removed", "new")
MISSED = "missed"  # no feature of the method points at the atom


@dataclass
class SyntheticPair:
    atoms_pre: np.ndarray  # (n_atoms, d) unit rows
    atoms_ft: np.ndarray  # (n_ft, d): the kept and changed atoms (in pretrained order), then the new ones
    category: np.ndarray  # (n_atoms,) kept / changed / removed, per pretrained atom
    ft_index: np.ndarray  # (n_atoms,) row of atoms_ft of each kept or changed atom (-1: removed)
    n_new: int
    angle: float
    k: float
    offset: np.ndarray
    noise: float
    seed: int

    @property
    def d(self) -> int:
        return self.atoms_pre.shape[1]

    def new_atoms(self) -> np.ndarray:
        return self.atoms_ft[len(self.atoms_ft) - self.n_new :]

    def truth(self) -> np.ndarray:
        """Category of every atom: the pretrained atoms in order, then the new atoms."""
        return np.concatenate([self.category, np.full(self.n_new, "new", dtype=object)]).astype(object)

    def sample(self, n_rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(pretrained, fine-tuned) activations of `n_rows` rows, float32."""
        rng = np.random.default_rng([self.seed, seed])
        n_pre = len(self.atoms_pre)
        p = self.k / n_pre

        def codes(n: int) -> np.ndarray:
            fire = rng.random((n_rows, n)) < p
            return (fire * rng.uniform(0.5, 1.5, (n_rows, n))).astype(np.float32)

        c_pre, c_new = codes(n_pre), codes(self.n_new)
        x_pre = c_pre @ self.atoms_pre
        alive = self.ft_index >= 0
        x_ft = c_pre[:, alive] @ self.atoms_ft[self.ft_index[alive]] + c_new @ self.new_atoms()
        out = []
        for x in (x_pre, x_ft):
            out.append((x + self.offset + self.noise * rng.standard_normal(x.shape)).astype(np.float32))
        return out[0], out[1]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_pair(
    d: int = 64,
    n_atoms: int = 96,
    shares: dict | None = None,
    angle: float = 45.0,
    k: float = 4.0,
    noise: float = 0.02,
    seed: int = 0,
) -> SyntheticPair:
    """The dictionary and the changes; `shares`: fractions of the atoms changed, removed and new."""
    shares = {"changed": 1 / 6, "removed": 1 / 6, "new": 1 / 6, **(shares or {})}
    rng = np.random.default_rng(seed)
    atoms = _unit(rng.standard_normal((n_atoms, d)))
    n_changed, n_removed = round(shares["changed"] * n_atoms), round(shares["removed"] * n_atoms)
    n_new = round(shares["new"] * n_atoms)
    category = np.array(
        ["kept"] * (n_atoms - n_changed - n_removed) + ["changed"] * n_changed + ["removed"] * n_removed
    )
    category = category[rng.permutation(n_atoms)].astype(object)
    ft_atoms, ft_index = [], np.full(n_atoms, -1, dtype=np.int64)
    theta = np.deg2rad(angle)
    for i in range(n_atoms):
        if category[i] == "removed":
            continue
        a = atoms[i]
        if category[i] == "changed":  # rotate towards a random direction orthogonal to the atom
            u = rng.standard_normal(d)
            u = _unit(u - (u @ a) * a)
            a = np.cos(theta) * a + np.sin(theta) * u
        ft_index[i] = len(ft_atoms)
        ft_atoms.append(a)
    new = _unit(rng.standard_normal((n_new, d)))
    offset = 0.1 * rng.standard_normal(d)
    return SyntheticPair(
        atoms, np.concatenate([np.array(ft_atoms), new]), category, ft_index, n_new, angle, k, offset, noise, seed
    )


def write_sets(pair: SyntheticPair, folder: str | Path, n_rows: int, split: str, shard_rows: int = 65536) -> dict:
    """Both variants' activation sets of one split under `folder`/{variant}/{split}; their paths."""
    from workflow.store.activations import ActivationWriter
    from workflow.store.files import atomic_dir

    x = dict(zip(("pretrained", "finetuned"), pair.sample(n_rows, seed={"train": 1, "test": 2}.get(split, 3))))
    out = {}
    for variant, acts in x.items():
        target = Path(folder) / variant / split
        meta = {"model": "synthetic", "variant": variant, "dataset": f"synthetic-{pair.seed}", "split": split}
        meta |= {"site": "resid_post", "layer": 1, "hook_name": "blocks.0.hook_resid_post"}
        with atomic_dir(target) as tmp:
            writer = ActivationWriter(tmp, pair.d, "float32", shard_rows, meta)
            writer.append(acts)
            writer.close()
        out[variant] = target
    return out


def best_features(decoder: np.ndarray, atoms: np.ndarray, min_cosine: float) -> np.ndarray:
    """Per atom, the feature (decoder row) pointing closest to it; -1 where no row reaches
    `min_cosine` (the method did not find the atom)."""
    norms = np.linalg.norm(decoder, axis=1)
    cos = (_unit(atoms) @ decoder.T) / np.maximum(norms, 1e-12)
    best = cos.argmax(1)
    return np.where(cos[np.arange(len(atoms)), best] >= min_cosine, best, -1)


def atom_labels(
    pair: SyntheticPair,
    pre_decoder: np.ndarray,
    pre_labels: np.ndarray,
    ft_decoder: np.ndarray,
    ft_labels: np.ndarray,
    min_cosine: float = 0.8,
) -> np.ndarray:
    """A method's answer per atom (order of `truth()`): each pretrained atom takes the label of the
    pretrained-side feature that points at it, each new atom that of the fine-tuned-side feature;
    `MISSED` where none points within `min_cosine`."""
    out = []
    for atoms, decoder, labels in (
        (pair.atoms_pre, pre_decoder, pre_labels),
        (pair.new_atoms(), ft_decoder, ft_labels),
    ):
        idx = best_features(decoder, atoms, min_cosine)
        out.append(np.where(idx >= 0, np.asarray(labels, dtype=object)[np.maximum(idx, 0)], MISSED))
    return np.concatenate(out).astype(object)


def score(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """Precision, recall, F1 and support per category, macro-F1, accuracy and Cohen's kappa."""
    from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

    truth, predicted = np.asarray(truth, dtype=str), np.asarray(predicted, dtype=str)
    p, r, f, n = precision_recall_fscore_support(truth, predicted, labels=list(CATEGORIES), zero_division=0)
    per = {
        c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(n[i])}
        for i, c in enumerate(CATEGORIES)
    }
    return {
        "categories": per,
        "macro_f1": float(np.mean(f[n > 0])) if (n > 0).any() else float("nan"),
        "min_f1": float(np.min(f[n > 0])) if (n > 0).any() else float("nan"),
        "accuracy": float((truth == predicted).mean()),
        "kappa": float(cohen_kappa_score(truth, predicted)),
        "missed": int((predicted == MISSED).sum()),
    }


def _matching(sae_pre, sae_ft, set_pre, set_ft, cfg: dict):
    """The diff stage's matching of two SAEs: (pretrained categories, fine-tuned categories)."""
    from workflow.analysis.matching import (
        categorize,
        decoder_cosines,
        firing_frequency,
        match_features,
        paired_activations,
    )

    rows = cfg["batch_rows"]
    live_pre = firing_frequency(sae_pre, set_pre, float("inf"), None, rows, "cpu") > 0
    live_ft = firing_frequency(sae_ft, set_ft, float("inf"), None, rows, "cpu") > 0
    sim = decoder_cosines(sae_pre.W_dec.detach().numpy(), sae_ft.W_dec.detach().numpy())
    partner, cos = match_features(sim, live_pre, live_ft)
    paired = paired_activations(sae_pre, sae_ft, set_pre, set_ft, partner, None, rows)
    return categorize(partner, cos, paired["corr"], paired["freq_pre"], paired["freq_ft"], cfg)


def _crosscoder_scores(pair, sets, recipe, folder: Path, cfg: dict, truth) -> dict:
    from workflow.analysis import crosscoding
    from workflow.sae.crosscoder import SIDES
    from workflow.sae.crosscoder import load as load_crosscoder
    from workflow.sae.training import train
    from workflow.store.activations import PairedSets

    cc_dir = folder / "crosscoder"
    train(PairedSets(*(sets["train"][v] for v in SIDES)), recipe, str(cc_dir), {"study": {}})
    cc = load_crosscoder(cc_dir)
    stats = crosscoding.statistics(cc, PairedSets(*(sets["test"][v] for v in SIDES)), None, cfg["batch_rows"])
    labels = crosscoding.latent_table(cc, stats, cfg)["category"].to_numpy().astype(object)
    W = cc.W_dec.detach().numpy()
    return {
        "crosscoder": score(truth, atom_labels(pair, W[:, : cc.side], labels, W[:, cc.side :], labels)),
        "crosscoder_quality": {k: stats[k] for k in ("fvu", "l0", "dead_fraction")},
    }


def _stagewise_scores(pair, sets, paths, sae_recipe, stagewise: dict, folder: Path, cfg: dict, truth) -> dict:
    import dataclasses

    from workflow.analysis import stagewise as sw
    from workflow.sae import load
    from workflow.sae.training import train, training_form

    start = training_form(load(folder / "sae" / "pretrained"))
    recipe = dataclasses.replace(
        sae_recipe,
        train_tokens=stagewise["steps"] * sae_recipe.batch_size,
        lr=stagewise.get("lr") or sae_recipe.lr,
        warmup_fraction=0.0,
    )
    train(str(paths["train"]["finetuned"]), recipe, str(folder / "stagewise"), {"study": {}}, start=start, start_id="s")
    end, first = load(folder / "stagewise"), load(folder / "sae" / "pretrained")
    test = sets["test"]
    moved = sw.movement_table(first, end, test["pretrained"], test["finetuned"], {**cfg, "max_tokens": None})
    pre = moved["category_pretrained"].to_numpy().astype(object)
    ft = moved["category_finetuned"].to_numpy().astype(object)
    decoders = first.W_dec.detach().numpy(), end.W_dec.detach().numpy()
    return {"stagewise": score(truth, atom_labels(pair, decoders[0], pre, decoders[1], ft))}


def compare_methods(
    pair: SyntheticPair,
    folder,
    sae_recipe,
    crosscoder_recipe,
    stagewise: dict,
    cfg: dict,
    n_train: int = 40000,
    n_test: int = 10000,
) -> dict:
    """Every diffing method on `pair`, scored against the truth: the matching of two SAEs (and
    with its seed baseline), the crosscoder and stage-wise fine-tuning. `cfg`: the diff and
    crosscoder thresholds; `stagewise`: {"steps", "lr"} of the stage-wise run."""
    import dataclasses

    from workflow.analysis.matching import MATCH_LABELS
    from workflow.sae import load
    from workflow.sae.training import train
    from workflow.store.activations import ActivationSet

    folder = Path(folder)
    paths = {split: write_sets(pair, folder / "acts", n, split) for split, n in (("train", n_train), ("test", n_test))}
    sets = {split: {v: ActivationSet(p) for v, p in paths[split].items()} for split in paths}
    test, saes = sets["test"], {}
    seeds = {"pretrained": sae_recipe.seed, "finetuned": sae_recipe.seed, "seed": sae_recipe.seed + 1}
    for name, seed in seeds.items():
        variant = "pretrained" if name == "seed" else name
        recipe = dataclasses.replace(sae_recipe, seed=seed)
        train(str(paths["train"][variant]), recipe, str(folder / "sae" / name), {"study": {}})
        saes[name] = load(folder / "sae" / name)
    truth, out = pair.truth(), {}
    pre_cat, ft_cat = _matching(saes["pretrained"], saes["finetuned"], test["pretrained"], test["finetuned"], cfg)
    as_labels = np.vectorize(lambda c: MATCH_LABELS.get(c, c), otypes=[object])
    pre_lab, ft_lab = as_labels(pre_cat), as_labels(ft_cat)
    decoders = (saes["pretrained"].W_dec.detach().numpy(), saes["finetuned"].W_dec.detach().numpy())
    out["matching"] = score(truth, atom_labels(pair, decoders[0], pre_lab, decoders[1], ft_lab))
    seed_cat, _ = _matching(saes["pretrained"], saes["seed"], test["pretrained"], test["pretrained"], cfg)
    out["seed_floor"] = {c: float((seed_cat == c).mean()) for c in ("retained", "drifted", "overwritten", "dead")}
    # a feature that two seeds do not both find cannot be judged: the corrected matching leaves it unresolved
    stable = (seed_cat == "retained") | (pre_cat == "dead")
    corrected = np.where(stable, pre_lab, "unresolved").astype(object)
    out["matching_seed_corrected"] = score(truth, atom_labels(pair, decoders[0], corrected, decoders[1], ft_lab))
    out |= _crosscoder_scores(pair, sets, crosscoder_recipe, folder, cfg, truth)
    out |= _stagewise_scores(pair, sets, paths, sae_recipe, stagewise, folder, cfg, truth)
    return out
