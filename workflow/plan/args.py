"""The command-line arguments the plan builds for jobs that read many folders (diff, methods,
lm_compare, report): lists of strings, unquoted except JSON values."""

from __future__ import annotations

import shlex

from workflow import layout
from workflow.layout import VARIANTS
from workflow.plan.slices import as_json


class Arguments:
    """Part of `workflow.plan.Plan`: command-line arguments of the jobs that read many folders."""

    study: dict

    def methods_args(self, model: str, dataset: str, site: str, layer: int, sae: str) -> list[str]:
        """The methods job's --stagewise and --crosscoders arguments."""
        stagewise = self.stagewise_dir(model, dataset, site, layer, sae)
        crosscoders = self.layer_crosscoders(model, dataset, site, layer)
        return [
            *(["--stagewise", stagewise] if stagewise else []),
            *(["--crosscoders", *(f"{k}={v}" for k, v in crosscoders.items())] if crosscoders else []),
        ]

    def diff_args(self, model: str, dataset: str, site: str, layer: int, sae: str) -> list[str]:
        """The diff job's --<variant>-sae, -acts, -classifier and -lm arguments, for both variants."""
        where = {"model": model, "dataset": dataset, "site": site, "layer": layer}
        args = []
        for v in VARIANTS:
            args += [
                f"--{v}-sae",
                layout.SAE.path(variant=v, sae=sae, **where),
                f"--{v}-acts",
                layout.ACTIVATION_SET.path(variant=v, split="test", **where),
            ]
        seed = self.seed_sae(model, dataset, site, layer, sae)
        return args + self.variant_model_args(model, dataset) + (["--seed-sae", seed] if seed else [])

    def variant_model_args(self, model: str, dataset: str) -> list[str]:
        """--<variant>-classifier and --<variant>-lm of both variants, where they exist."""
        args = []
        for v in VARIANTS:
            classifier = self.classifier(model, v, dataset)
            args += [f"--{v}-classifier", classifier] if classifier else []
            lm = self.lm_spec(model, v, dataset)
            args += [f"--{v}-lm", shlex.quote(as_json(lm))] if lm else []
        return args

    def lm_compare_args(self, model: str, dataset: str) -> list[str]:
        """The lm_compare job's --pretrained-lm and --finetuned-lm arguments."""
        args = []
        for v in VARIANTS:
            args += [f"--{v}-lm", shlex.quote(as_json(self.lm_spec(model, v, dataset)))]
        return args

    def report_args(self, model: str, dataset: str) -> list[str]:
        """The report job's command-line arguments for its inputs (unquoted: the rule quotes each)."""
        w = {"model": model, "dataset": dataset}
        inputs = self.report_inputs(model, dataset)
        args = [
            "--meta",
            *inputs["meta"],
            "--truncation",
            *inputs["truncation"],
            "--truncation-warning",
            str(self.study["tokenize"]["truncation_warning"]),
            *(["--metrics", *inputs["metrics"]] if inputs["metrics"] else []),
            *(
                ["--frozen", *(f"{v}={f}" for v, f in zip(self.frozen_variants(model, dataset), inputs["frozen"]))]
                if inputs["frozen"]
                else []
            ),
            *(["--lm-compare", layout.LM_COMPARE.path(**w)] if inputs["lm"] else []),
            "--kind",
            self.kind(model),
            *([] if self.made(model) else ["--variant-source", self.variant_source(model, "finetuned", dataset)]),
            *(["--skipped", as_json(self.skipped(model, dataset))] if self.skipped(model, dataset) else []),
            "--similarity",
            inputs["similarity"][0],
            "--plot",
            inputs["similarity"][1],
            "--extracts",
            *inputs["extracts"],
        ]
        if self.recipes(model, dataset):
            args += [
                "--saes",
                *self.sae_dirs(model, dataset),
                "--diffs",
                *self.diff_dirs(model, dataset),
                "--diff-summaries",
                *(f"{sae}={layout.DIFF_SUMMARY.path(sae=sae, **w)}" for sae in self.recipes(model, dataset)),
            ]
            if self.methods_dirs(model, dataset):
                args += ["--methods", *self.methods_dirs(model, dataset)]
        if inputs["crosscoders"]:
            args += ["--crosscoders", *self.crosscoder_dirs(model, dataset)]
        if inputs["probes"]:
            args += ["--probe-summary", layout.PROBE_SUMMARY.path(**w), "--kmeans", layout.KMEANS.path(**w)]
        if inputs["heads"]:
            args += ["--heads-summary", layout.HEADS_SUMMARY.path(**w)]
        return args + self.scratch_report_args(model, dataset)
