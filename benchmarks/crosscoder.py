"""Crosscoder training throughput against training the two SAEs it replaces.

The crosscoder (`workflow.sae.crosscoder`, trained by `workflow.sae.training.train` on
`PairedSets`) reads both variants' activations of a token at once; the matching it replaces
trains one TopK SAE per variant on the same tokens. Both use the sparse kernels (selected
pre-activations, embedding_bag decode), AuxK and the same trainer. Same latents per side
(d_sae), k per SAE and 2k for the crosscoder (it codes both sides). Prints paired tokens/s of
each (a paired token: one token's activations in both variants; for the two SAEs, the rate at
which both are trained on it) and their ratio.

    python benchmarks/crosscoder.py                  # d_in 384 (MiniLM), 8x width, k 32, on the CPU
    python benchmarks/crosscoder.py --d-in 2048 --expansion 16 --batch-size 4096 --steps 200   # GPU
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: its sibling benchmarks
from sae import synthetic_set

from workflow.models.loading import describe_device, pick_device
from workflow.sae.crosscoder import CrosscoderRecipe
from workflow.sae.topk import TopKRecipe
from workflow.sae.training import train
from workflow.store.activations import ActivationSet, PairedSets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=384)
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--k", type=int, default=32, help="per SAE; the crosscoder keeps 2k")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = pick_device()
    rows = args.batch_size * args.steps
    common = {"lr": 1e-4, "batch_size": args.batch_size, "train_tokens": rows, "dtype": args.dtype, "log_every": 10**6}
    d_sae = args.expansion * args.d_in
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, variant in enumerate(("pretrained", "finetuned")):
            synthetic_set(root / variant, rows, args.d_in, seed=i)
        sae = TopKRecipe(architecture="topk", k=args.k, d_sae=d_sae, **common)
        seconds = {}
        for variant in ("pretrained", "finetuned"):
            seconds[variant] = train(str(root / variant), sae, str(root / f"sae-{variant}"), {}, device)["seconds"]
        cc = CrosscoderRecipe(k=2 * args.k, d_sae=d_sae, **common)
        paired = PairedSets(ActivationSet(root / "pretrained"), ActivationSet(root / "finetuned"))
        seconds["crosscoder"] = train(paired, cc, str(root / "cc"), {}, device)["seconds"]
    two = rows / (seconds["pretrained"] + seconds["finetuned"])
    one = rows / seconds["crosscoder"]
    print(
        f"device: {describe_device(device)}; d_in {args.d_in}, d_sae {d_sae}, k {args.k} per SAE / {2 * args.k} "
        f"crosscoder, batch {args.batch_size}, {args.steps} steps, {args.dtype}"
    )
    print(f"two SAEs  {two:9.0f} paired tokens/s")
    print(f"crosscoder {one:8.0f} paired tokens/s  ratio {one / two:.3f}")


if __name__ == "__main__":
    main()
