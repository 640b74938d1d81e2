"""Every diffing method scored against a case whose answer is known: the README's F1 table.

Two activation sets from one dictionary of unit atoms (`workflow.analysis.synthetic.make_pair`):
in the second, some atoms are rotated, some removed, some new. For each pair seed, the matching of
two TopK SAEs (plain, and with its seed baseline), the crosscoder and stage-wise fine-tuning are
trained and scored per category (kept / changed / removed / new), with the thresholds the config
schema defaults to. The shapes are the test suite's (`tests/analysis/test_synthetic.py`).

    python benchmarks/synthetic_diff.py                     # seeds 0 1 2, about a minute a seed on 2 cores
    python benchmarks/synthetic_diff.py --seeds 0 --angle 30
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from workflow import config
from workflow.analysis import synthetic
from workflow.models.loading import describe_device, pick_device
from workflow.sae.crosscoder import CrosscoderRecipe
from workflow.sae.topk import TopKRecipe

METHODS = {
    "crosscoder": "crosscoder (k {cc_k}, {cc_d} latents)",
    "stagewise": "stage-wise ({steps} steps)",
    "matching": "matching of two SAEs",
    "matching_seed_corrected": "matching, seed-corrected",
}


def thresholds() -> dict:
    """The diff's and the crosscoder's and stage-wise analysis defaults, from the config schema."""
    props = config.schema()["properties"]
    out = {}
    for section in ("diff", "crosscoder", "stagewise"):
        out |= {k: v["default"] for k, v in props[section]["properties"].items() if "default" in v}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--atoms", type=int, default=96)
    parser.add_argument("--angle", type=float, default=45.0, help="degrees each changed atom turns")
    parser.add_argument("--train-tokens", type=int, default=300_000)
    parser.add_argument("--steps", type=int, default=100, help="stage-wise steps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    common = {"lr": 5e-3, "batch_size": 512, "train_tokens": args.train_tokens, "dead_tokens": 5000, "log_every": 1000}
    sae = TopKRecipe(architecture="topk", k=4, d_sae=2 * args.d, **common)
    cc = CrosscoderRecipe(k=6, d_sae=3 * args.d, **common)
    cfg = thresholds()
    rows = {m: [] for m in METHODS}
    for seed in args.seeds:
        pair = synthetic.make_pair(d=args.d, n_atoms=args.atoms, angle=args.angle, seed=seed)
        with tempfile.TemporaryDirectory() as tmp:
            scores = synthetic.compare_methods(pair, tmp, sae, cc, {"steps": args.steps, "lr": None}, cfg)
        for m in METHODS:
            rows[m].append(" / ".join(f"{scores[m]['categories'][c]['f1']:.2f}" for c in synthetic.CATEGORIES))
        print(f"seed {seed}: seed floor {scores['seed_floor']}", flush=True)
    print(f"\n{args.d} dimensions, {args.atoms} atoms, {args.angle:g} degrees; {describe_device(pick_device())}")
    print(f"F1 per category ({' / '.join(synthetic.CATEGORIES)})\n")
    print("| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for m, label in METHODS.items():
        name = label.format(cc_k=cc.k, cc_d=cc.d_sae, steps=args.steps)
        print(f"| {name} | " + " | ".join(rows[m]) + " |")


if __name__ == "__main__":
    main()
