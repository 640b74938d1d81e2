# What fine-tuning changes inside a transformer: the study DAG.
# This file only wires: config validation, the rule files, and `rule all`.
# Every stage is `python -m workflow <stage>` (see workflow/); rules stay thin.

import os

from workflow import config as study


# The default study, unless --configfile names another: a user's study must not
# be merged with the default one (Snakemake would otherwise extend it).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config.yaml")


STUDY = study.load(config)  # raises ConfigError naming every bad key before any job runs


include: "rules/common.smk"
include: "rules/dataset.smk"
include: "rules/tokenize.smk"
include: "rules/finetune.smk"
include: "rules/extract.smk"
include: "rules/similarity.smk"
include: "rules/sae.smk"
include: "rules/features.smk"
include: "rules/diff.smk"
include: "rules/probe.smk"
include: "rules/heads.smk"
include: "rules/report.smk"


rule all:
    input:
        "results/reports/index.html",
        all_extractions(),
        all_sae_evals(),
        all_diff_summaries(),
        all_probe_summaries(),
        all_heads_summaries(),
    default_target: True
