# Thin wrappers that hand the plan (workflow/plan/) and the paths (workflow/layout.py)
# to the rules. All logic lives in those two modules and is unit-tested there.

import os
import shlex
import sys

from workflow import layout
from workflow.runner.codehash import code_version
from workflow.models.sites import SITES
from workflow.layout import VARIANTS
from workflow.plan import Plan, as_json

PLAN = Plan(STUDY)

# Jobs run `python -m workflow <stage>`: the `python` of the environment that runs Snakemake, so
# that `.venv/bin/snakemake` works without activating it. Under `--sdm conda` a job activates its
# rule's environment, which puts that environment's `python` first again.
_BIN = os.path.dirname(sys.executable)
if os.path.isfile(os.path.join(_BIN, "python")) and os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ.update(PATH=_BIN + os.pathsep + os.environ.get("PATH", ""))


wildcard_constraints:
    model="|".join(PLAN.models),
    dataset="|".join(PLAN.datasets),
    variant="|".join(VARIANTS),
    split="train|test",
    site="|".join(SITES),
    layer=r"\d+",
    sae="|".join(PLAN.saes) or "(?!)",
    crosscoder="|".join(PLAN.crosscoders) or "(?!)",
    kind="|".join(layout.FINETUNE_KINDS),


class stage_job:
    """The lines every stage's rule shares, made from its name and the wildcards in its log's name.

    Used as `conda: diff_job.env`, `log: diff_job.log`, `benchmark: diff_job.benchmark` and
    `shell: diff_job.shell(options)` (``python -m workflow <stage> <options>`` into the log), with
    `diff_job` set just above its rule. One name per rule: Snakemake reads the conda, log and
    benchmark lines where they stand but the shell line when a job runs."""

    env = "../envs/workflow.yaml"  # relative to the rule file, for `--sdm conda`

    def __init__(self, rule, wildcards="", stage=None):
        self.stage = stage or rule
        self.log = layout.log(rule, wildcards)
        self.benchmark = layout.benchmark(rule, wildcards)

    def shell(self, options):
        return f"python -m workflow {self.stage} {options} > {{log}} 2>&1"


def files(folder, *names):
    """Named file patterns of a layout folder, for a rule's input or output."""
    return {name: folder.pattern(name) for name in names}


def variant_weights(w):
    """The fine-tuned weights a job of the variant reads, where a finetune job makes them."""
    return PLAN.variant_inputs(w.model, w.variant, w.dataset)


def classifier_weights(w):
    """The weights of the variant's task classifier (none on unlabelled data)."""
    return PLAN.classifier_inputs(w.model, w.variant, w.dataset)


def classifier_arg(w):
    """--classifier <folder> where the variant has a task classifier (labelled data)."""
    folder = PLAN.classifier(w.model, w.variant, w.dataset)
    return f"--classifier {folder}" if folder else ""


def lm_arg(w):
    """--lm <JSON spec> where the variant has a language-model head."""
    spec = PLAN.lm_spec(w.model, w.variant, w.dataset)
    return f"--lm {shlex.quote(as_json(spec))}" if spec else ""


def load_arg(w):
    """The model's load options (dtype, device_map) as JSON."""
    return as_json(PLAN.load_options(w.model))


def parent(name):
    """The folder of a rule's named input file: how Snakemake wants a folder that holds inputs passed."""
    return lambda w, input: os.path.dirname(getattr(input, name))


def layer_saes(w):
    return PLAN.layer_saes(w.model, w.variant, w.dataset, w.site, w.layer)
