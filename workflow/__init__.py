"""What fine-tuning changes inside a transformer: the study's Python package.

`python -m workflow <stage>` runs one stage (`workflow.stages`); `layout` names every
path, `plan` the jobs of a study, `config` validates it, `codehash` versions each
stage's code. Shared code lives in topic packages: `models`, `sae`, `analysis`,
`store`, `datasets`, `report`. Nothing here imports Snakemake.
"""
