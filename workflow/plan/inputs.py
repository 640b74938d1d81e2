"""What each gathering job reads and what `rule all` asks for: folders and files from `workflow.layout`."""

from __future__ import annotations

from workflow import layout
from workflow.layout import VARIANTS


class Inputs:
    """Part of `workflow.plan.Plan`: the folders a gathering job reads, and the study's targets."""

    study: dict
    saes: list[str]

    # ------------------------------------------------------------ what gathering jobs read

    def sae_dirs(self, model: str, dataset: str) -> list[str]:
        """Every SAE folder of (model, dataset): recipe, then (site, layer), then variant."""
        return [
            layout.SAE.path(model=model, variant=v, dataset=dataset, site=site, layer=layer, sae=sae)
            for sae in self.saes
            for site, layer in self.sae_scope(model, dataset, sae)
            for v in VARIANTS
        ]

    def diff_dirs(self, model: str, dataset: str, sae: str | None = None) -> list[str]:
        """Diff folders of one recipe (or of all) on (model, dataset)."""
        return [
            layout.DIFF.path(model=model, dataset=dataset, site=site, layer=layer, sae=name)
            for name in ([sae] if sae else self.saes)
            for site, layer in self.sae_scope(model, dataset, name)
        ]

    def probe_dirs(self, model: str, dataset: str) -> list[str]:
        return [
            layout.PROBE.path(model=model, dataset=dataset, variant=v, site=site, layer=layer)
            for v in VARIANTS
            for site, layer in self.probe_scope(model, dataset)
        ]

    def kmeans_plan(self, model: str, dataset: str) -> list[dict]:
        """What the k-means job clusters: each variant's test set at each probed (site, layer), and its SAEs."""
        return [
            {
                "acts": layout.ACTIVATION_SET.path(
                    model=model, variant=v, dataset=dataset, split="test", site=site, layer=layer
                ),
                "saes": self.layer_saes(model, v, dataset, site, layer),
            }
            for v in VARIANTS
            for site, layer in self.probe_scope(model, dataset)
        ]

    def extract_summaries(self, model: str, dataset: str, splits=None) -> list[str]:
        return [
            layout.ACTIVATIONS.file("summary", model=model, variant=v, dataset=dataset, split=split)
            for v in VARIANTS
            for split in splits or self.study["extract"]["splits"]
        ]

    def report_inputs(self, model: str, dataset: str) -> dict[str, list[str]]:
        """Every file the report folder of (model, dataset) shows, by kind: the report job reads them,
        and Snakemake re-runs it when any of them changes."""
        w = {"model": model, "dataset": dataset}
        probed = bool(self.probe_scope(model, dataset))
        sae_files = ("eval", "features_summary", "features", "examples", "sentences")
        return {
            "meta": [layout.DATA.file("meta", dataset=dataset)],
            "truncation": [layout.TOKENS.file("truncation", split=s, **w) for s in ("train", "test")],
            "metrics": [f"{self.finetuned_dir(model, dataset)}/{layout.CLASSIFIER_FILES['metrics']}"]
            if self.made(model)
            else [],
            "frozen": [layout.FROZEN.file("metrics", variant=v, **w) for v in self.frozen_variants(model, dataset)],
            "lm": layout.LM_COMPARE.files("summary", "documents", "plot", **w) if self.lm_compared(model) else [],
            "similarity": layout.SIMILARITY.files("table", "plot", **w),
            "extracts": self.extract_summaries(model, dataset),
            "saes": layout.SAE.inside(self.sae_dirs(model, dataset), *sae_files),
            "diffs": layout.DIFF.inside(self.diff_dirs(model, dataset), "summary", "table", "changed"),
            "methods": layout.METHODS.inside(self.methods_dirs(model, dataset), "summary"),
            "crosscoders": layout.CROSSCODER.inside(self.crosscoder_dirs(model, dataset), "summary"),
            "diff_summaries": [
                layout.DIFF_SUMMARY.file(n, sae=sae, **w)
                for sae in self.recipes(model, dataset)
                for n in ("categories_plot", "transfer_plot", "cosine_plot")
            ],
            "probes": layout.PROBE_SUMMARY.files(*layout.PROBE_SUMMARY.names, **w) if probed else [],
            "kmeans": layout.KMEANS.files("scores", "clusters", "plot", **w) if probed else [],
            "heads": layout.HEADS_SUMMARY.files("changes", "ablation_plot", "change_plot", "viewer", **w)
            if dataset in self.heads_datasets()
            else [],
            **self.scratch_report_inputs(model, dataset),
        }

    def methods_dirs(self, model: str, dataset: str) -> list[str]:
        """Where the methods are compared: wherever the diff runs beside stage-wise fine-tuning or a crosscoder."""
        return [
            layout.METHODS.path(model=model, dataset=dataset, site=site, layer=layer, sae=sae)
            for sae in self.saes
            for site, layer in self.sae_scope(model, dataset, sae)
            if self.stagewise_dir(model, dataset, site, layer, sae)
            or self.layer_crosscoders(model, dataset, site, layer)
        ]

    # ------------------------------------------------------------ targets

    def targets(self) -> list[str]:
        """What `rule all` asks for: every report, extraction, SAE evaluation and summary."""
        out = [layout.REPORT_INDEX.file("page")]
        for model, dataset in self.pairs():
            w = {"model": model, "dataset": dataset}
            out += self.extract_summaries(model, dataset)
            out += [layout.LM_COMPARE.file("summary", **w)] if self.lm_compared(model) else []
            out += layout.SAE.inside(self.sae_dirs(model, dataset), "eval")
            out += [layout.DIFF_SUMMARY.file("categories", sae=sae, **w) for sae in self.recipes(model, dataset)]
            out += layout.METHODS.inside(self.methods_dirs(model, dataset), "summary")
            out += layout.CROSSCODER.inside(self.crosscoder_dirs(model, dataset), "summary")
            if self.probe_scope(model, dataset):
                out += [layout.PROBE_SUMMARY.file("probes", **w), layout.KMEANS.file("summary", **w)]
            if dataset in self.heads_datasets():
                out.append(layout.HEADS_SUMMARY.file("changes", **w))
        out += [layout.EMERGENCE.file("summary", model=m, dataset=d) for m, d in self.emergence_pairs()]
        out += [f"{d}/{layout.TRUTH.names['summary']}" for m, ds in self.pairs() for d in self.truth_dirs(m, ds)]
        return out

    def report_pages(self) -> list[str]:
        return [layout.REPORT.path(model=m, dataset=d) for m, d in self.pairs()]
