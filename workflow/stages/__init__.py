"""One module per rule: `run(...)` on plain paths and values, and `main(argv)`, its command line.

Each shares its name with ``rules/<stage>.smk`` and ``tests/test_<stage>.py``. Stages never
import each other; what two stages share lives in the topic packages (`workflow.models`,
`workflow.sae`, `workflow.analysis`, `workflow.store`, `workflow.report`).
"""

# fmt: off
STAGES = ("dataset", "tokens", "finetune", "frozen_classifier", "extract", "similarity", "train_sae", "evaluate_sae",
          "features", "diff", "diff_summary", "probe", "probe_summary", "kmeans", "heads", "heads_summary", "report",
          "report_index")
# Stages whose rules declare `resources: gpu=1`: each claims its own card (workflow/gpus.py).
GPU_STAGES = ("finetune", "frozen_classifier", "extract", "similarity", "train_sae", "evaluate_sae", "features", "diff",
              "heads")
# fmt: on
