"""`python -m workflow <stage> [options]`: run one stage from the command line."""

import importlib
import logging
import sys

STAGES = ("dataset", "tokenize", "finetune", "extract", "similarity", "linear_head", "train_sae", "evaluate_sae",
          "features", "diff", "diff_summary", "probe", "cluster", "heads", "heads_summary",
          "probe_summary", "report")
# Stages whose rules declare `resources: gpu=1`: each claims its own card (workflow/gpus.py).
GPU_STAGES = ("finetune", "linear_head", "extract", "similarity", "train_sae", "evaluate_sae", "features", "diff",
              "heads")


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in STAGES:
        sys.exit(f"usage: python -m workflow {{{','.join(STAGES)}}} [options]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if argv[0] in GPU_STAGES:
        from workflow import gpus

        gpus.claim()  # before torch starts CUDA
    importlib.import_module(f"workflow.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
