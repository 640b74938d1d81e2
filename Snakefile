# What fine-tuning changes inside a transformer: the study DAG.
# This file only wires: config validation, the rule files, and `rule all`.
# Every stage is `python -m workflow <stage>` (workflow/stages/); rules stay thin: paths come
# from workflow/layout.py and the job plan from workflow/plan/ (wrapped in rules/common.smk).

import os

from workflow import config as study


# The default study, unless --configfile names another: a user's study must not
# be merged with the default one (Snakemake would otherwise extend it).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


STUDY = study.load(config)  # raises ConfigError naming every bad key before any job runs


include: "rules/common.smk"
include: "rules/dataset.smk"
include: "rules/init_model.smk"
include: "rules/tokens.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/frozen_classifier.smk"
include: "rules/extract.smk"
include: "rules/similarity.smk"
include: "rules/train_sae.smk"
include: "rules/evaluate_sae.smk"
include: "rules/features.smk"
include: "rules/diff.smk"
include: "rules/diff_summary.smk"
include: "rules/crosscoder.smk"
include: "rules/stagewise.smk"
include: "rules/methods.smk"
include: "rules/emergence.smk"
include: "rules/ground_truth.smk"
include: "rules/probe.smk"
include: "rules/probe_summary.smk"
include: "rules/kmeans.smk"
include: "rules/heads.smk"
include: "rules/heads_summary.smk"
include: "rules/lm_compare.smk"
include: "rules/report.smk"
include: "rules/report_index.smk"


rule all:
    input:
        PLAN.targets(),
    default_target: True
