"""Does a JumpReLU recipe reach its `target_l0`? Final L0 and FVU after a given number of steps,
for several targets and coefficient-controller rates (`workflow.sae.losses.adapt_coefficient`).

The data: sparse sums of 16 of 512 unit directions in 64 dimensions (60,000 rows, the test
suite's planted dictionary). A JumpReLU SAE of 1,024 latents trains with batches of 512.

    python benchmarks/jumprelu_l0.py                              # 118 and 600 steps, targets 8 and 40
    python benchmarks/jumprelu_l0.py --steps 118 --targets 8 --rates 0.01 0.1 0.2
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.sae_helpers: the planted data

from tests.sae_helpers import planted_dictionary_set, recipe
from workflow.sae import losses, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[118, 600])
    parser.add_argument("--targets", type=float, nargs="+", default=[8, 40])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.01])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts"
        planted_dictionary_set(acts, n=60000, d=64, m=512, k=16)
        print("| steps | target L0 | controller rate | final L0 | FVU |")
        print("|---|---|---|---|---|")
        for steps in args.steps:
            for target in args.targets:
                for rate in args.rates:
                    training.adapt_coefficient = functools.partial(losses.adapt_coefficient, rate=rate)
                    r = recipe("jumprelu", d_sae=1024, target_l0=target, train_tokens=steps * 512, batch_size=512)
                    out = Path(tmp) / f"sae-{steps}-{target}-{rate}"
                    final = training.train(str(acts), r, str(out), {"hook_name": "h"}, torch.device("cpu"))["final"]
                    print(f"| {steps} | {target:g} | {rate:g} | {final['l0']:.1f} | {final['fvu']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
