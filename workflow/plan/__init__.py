"""The job plan of a study: plain functions of the validated config, unit-tested without Snakemake.

`Plan(study)` answers what the rules ask: which (site, layer) pairs a section's scope
covers (`scope`: one function for the SAE recipes, the probes and k-means, and the
attention heads), which slice of the config each job receives (so that editing one
recipe re-runs one recipe), where each variant's model comes from, what every
gathering job reads, and the study's final targets. Paths come from `workflow.layout`.
``rules/common.smk`` only wraps these methods for Snakemake.

Orders are canonical (layers ascending, sites in `SITES` order, recipes as
configured), so reordering a config list re-runs nothing.
"""

from __future__ import annotations

from workflow.models.sites import SITES
from workflow.plan.args import Arguments
from workflow.plan.inputs import Inputs
from workflow.plan.scopes import Scopes
from workflow.plan.scratch import ScratchJobs
from workflow.plan.slices import SCOPE_KEYS, Slices, as_json, without
from workflow.plan.variants import Variants

__all__ = ["SCOPE_KEYS", "Plan", "as_json", "without"]


class Plan(Scopes, Slices, Inputs, Arguments, Variants, ScratchJobs):
    """The study's job plan: one part per question (`scopes`, `slices`, `inputs`, `args`, `variants`,
    `scratch`), each a module of this package."""

    def __init__(self, study: dict):
        self.study = study
        self.models = list(study["models"])
        self.datasets = list(study["datasets"])
        self.saes = list(study["saes"])
        self.crosscoders = list(study.get("crosscoders") or {})
        self.sites = sorted(study["sites"], key=SITES.index)
        self._stored: dict[str, list[tuple[str, int]]] = {}
