"""What `python -m workflow <command>` runs: every stage, which stages claim a GPU, and the commands
that are not stages. Kept out of `workflow.stages` so that no stage's code version covers it: adding a
stage re-runs no other."""

# fmt: off
STAGES = ("dataset", "init_model", "tokens", "pretrain", "finetune", "frozen_classifier", "extract", "similarity",
          "train_sae", "evaluate_sae", "features", "diff", "diff_summary", "probe", "probe_summary", "kmeans",
          "heads", "heads_summary", "lm_compare", "crosscoder", "stagewise", "methods", "emergence", "ground_truth",
          "report", "report_index")
# Stages whose rules declare `resources: gpu=1`: each claims its own card (workflow/runner/gpus.py).
GPU_STAGES = ("pretrain", "finetune", "frozen_classifier", "extract", "similarity", "train_sae", "evaluate_sae",
              "features", "diff", "heads", "emergence", "lm_compare", "crosscoder", "stagewise")
# fmt: on
COMMANDS = {
    "summary": "workflow.report.summary",
    "verify": "workflow.store.verify",
    "estimate": "workflow.estimate.cli",
    "explore": "workflow.explore.cli",
}  # commands that are not stages: name -> module
