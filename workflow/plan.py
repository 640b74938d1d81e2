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

import json
import shlex

from workflow import layout
from workflow.layout import VARIANTS
from workflow.models.sites import SITES
from workflow.scratch_jobs import ScratchJobs
from workflow.variants import Variants

SCOPE_KEYS = ("datasets", "layers", "sites")  # where a section runs; never passed to its jobs
FROZEN_KEYS = ("seed", "max_train_docs", "eval_batch_size")  # the finetune keys the frozen classifier reads


def as_json(obj) -> str:
    """Canonical JSON of a config slice, passed to a stage and compared by Snakemake."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def without(section: dict, keys) -> dict:
    """A config section without some of its keys (scope keys, display-only keys)."""
    return {k: v for k, v in section.items() if k not in keys}


class Plan(Variants, ScratchJobs):
    def __init__(self, study: dict):
        self.study = study
        self.models = list(study["models"])
        self.datasets = list(study["datasets"])
        self.saes = list(study["saes"])
        self.crosscoders = list(study.get("crosscoders") or {})
        self.sites = sorted(study["sites"], key=SITES.index)
        self._stored: dict[str, list[tuple[str, int]]] = {}

    # ------------------------------------------------------------ models

    def model(self, model: str) -> dict:
        return self.study["models"][model]

    def family(self, model: str) -> str:
        return self.model(model)["family"]

    def load_options(self, model: str) -> dict:
        """How a model's weights are loaded (`models.<name>.load`: dtype, device_map)."""
        return self.model(model)["load"]

    def local_files(self, dataset: str) -> list[str]:
        """The files a `source: file` dataset reads: editing them re-runs the dataset."""
        spec = self.study["datasets"][dataset]
        return [spec[key] for key in ("path", "test_path") if spec.get(key)]

    # ------------------------------------------------------------ scopes

    def stored(self, model: str) -> list[tuple[str, int]]:
        """(site, layer) of every activation set of a model, layers ascending, sites in SITES order."""
        if model not in self._stored:
            self._stored[model] = [(s, layer) for layer in sorted(self.model(model)["layers"]) for s in self.sites]
        return self._stored[model]

    def extract_targets(self, model: str) -> list[str]:
        """The extract job's site:layer arguments, e.g. ['resid_post:2', ...]."""
        return [f"{site}:{layer}" for site, layer in self.stored(model)]

    def scope(self, section: dict, model: str, dataset: str) -> list[tuple[str, int]]:
        """(site, layer) pairs of (model, dataset) that a section's `datasets`, `sites` and `layers`
        keys cover (a missing or null key covers everything)."""
        if not self.covers(section, dataset):
            return []
        sites = section.get("sites") or self.sites
        layers = section.get("layers") or self.model(model)["layers"]
        return [(site, layer) for site, layer in self.stored(model) if site in sites and layer in layers]

    @staticmethod
    def covers(section: dict, dataset: str) -> bool:
        return not section.get("datasets") or dataset in section["datasets"]

    def sae_scope(self, model: str, dataset: str, sae: str) -> list[tuple[str, int]]:
        return self.scope(self.study["saes"][sae], model, dataset)

    def probe_scope(self, model: str, dataset: str) -> list[tuple[str, int]]:
        """Where probes and k-means run (the `probe` section's scope); nowhere on unlabelled data."""
        if not self.labelled(dataset):
            return []
        return self.scope(self.study["probe"], model, dataset)

    def heads_datasets(self) -> list[str]:
        """Datasets whose heads are analysed: the `heads` scope's labelled ones (heads reads the task classifier)."""
        return [d for d in self.datasets if self.covers(self.study["heads"], d) and self.labelled(d)]

    def recipes(self, model: str, dataset: str) -> list[str]:
        """SAE recipes with at least one SAE on (model, dataset)."""
        return [sae for sae in self.saes if self.sae_scope(model, dataset, sae)]

    def layer_saes(self, model: str, variant: str, dataset: str, site: str, layer: int) -> dict[str, str]:
        """{recipe: SAE folder} of every SAE of a variant at this (site, layer)."""
        return {
            sae: layout.SAE.path(model=model, variant=variant, dataset=dataset, site=site, layer=layer, sae=sae)
            for sae in self.saes
            if (site, int(layer)) in self.sae_scope(model, dataset, sae)
        }

    # ------------------------------------------------------------ diffing methods

    def seed_sae(self, model: str, dataset: str, site: str, layer: int, sae: str) -> str | None:
        """The pretrained SAE's seed twin of a diffed (site, layer, recipe), where the diff has a seed baseline."""
        diff = self.study["diff"]
        if not diff["seed_baseline"] or (
            diff["seed_baseline_layers"] and int(layer) not in diff["seed_baseline_layers"]
        ):
            return None
        return layout.SEED_SAE.path(model=model, dataset=dataset, site=site, layer=layer, sae=sae)

    def seed_recipe(self, sae: str) -> dict:
        """The seed twin's recipe: the recipe with seed + 1."""
        recipe = self.sae_recipe(sae)
        return {**recipe, "seed": recipe["seed"] + 1}

    def crosscoder_scope(self, model: str, dataset: str, crosscoder: str) -> list[tuple[str, int]]:
        return self.scope(self.study["crosscoders"][crosscoder], model, dataset)

    def crosscoder_recipe(self, crosscoder: str) -> dict:
        return without(self.study["crosscoders"][crosscoder], SCOPE_KEYS)

    def crosscoder_config(self) -> dict:
        """The crosscoder job's analysis settings (with the diff's cosine for "kept")."""
        return {**self.study["crosscoder"], "retained_cosine": self.study["diff"]["retained_cosine"]}

    def crosscoder_dirs(self, model: str, dataset: str) -> list[str]:
        return [
            layout.CROSSCODER.path(model=model, dataset=dataset, site=site, layer=layer, crosscoder=cc)
            for cc in self.crosscoders
            for site, layer in self.crosscoder_scope(model, dataset, cc)
        ]

    def layer_crosscoders(self, model: str, dataset: str, site: str, layer: int) -> dict[str, str]:
        """{recipe: folder} of every crosscoder at this (site, layer)."""
        return {
            cc: layout.CROSSCODER.path(model=model, dataset=dataset, site=site, layer=layer, crosscoder=cc)
            for cc in self.crosscoders
            if (site, int(layer)) in self.crosscoder_scope(model, dataset, cc)
        }

    def stagewise_dir(self, model: str, dataset: str, site: str, layer: int, sae: str) -> str | None:
        if not self.study.get("stagewise", {}).get("enabled"):
            return None
        return layout.STAGEWISE.path(model=model, dataset=dataset, site=site, layer=layer, sae=sae)

    def stagewise_config(self) -> dict:
        """The stagewise job's settings, with the diff's thresholds it categorises by."""
        diff = self.study["diff"]
        keys = ("match_cosine", "retained_cosine", "retained_correlation", "outlier_norm_factor")
        return {**without(self.study["stagewise"], ("enabled",)), **{k: diff[k] for k in keys}}

    def methods_args(self, model: str, dataset: str, site: str, layer: int, sae: str) -> list[str]:
        """The methods job's --stagewise and --crosscoders arguments."""
        stagewise = self.stagewise_dir(model, dataset, site, layer, sae)
        crosscoders = self.layer_crosscoders(model, dataset, site, layer)
        return [
            *(["--stagewise", stagewise] if stagewise else []),
            *(["--crosscoders", *(f"{k}={v}" for k, v in crosscoders.items())] if crosscoders else []),
        ]

    def methods_dirs(self, model: str, dataset: str) -> list[str]:
        """Where the methods are compared: wherever the diff runs beside stage-wise fine-tuning or a crosscoder."""
        return [
            layout.METHODS.path(model=model, dataset=dataset, site=site, layer=layer, sae=sae)
            for sae in self.saes
            for site, layer in self.sae_scope(model, dataset, sae)
            if self.stagewise_dir(model, dataset, site, layer, sae)
            or self.layer_crosscoders(model, dataset, site, layer)
        ]

    # ------------------------------------------------------------ job slices

    def finetune_config(self, model: str) -> dict:
        """The finetune job's slice: the training settings, the kind, and the method and LoRA settings
        of an LM fine-tune."""
        made = {k: v for k, v in self.model(model)["finetuned"].items() if k in ("kind", "method", "lora")}
        return {**self.model(model)["finetune"], **made}

    def frozen_config(self, model: str) -> dict:
        return {k: self.model(model)["finetune"][k] for k in FROZEN_KEYS}

    def extract_config(self) -> dict:
        return without(self.study["extract"], ("splits",))

    def sae_recipe(self, sae: str) -> dict:
        """One SAE job's recipe: editing another recipe, or this one's scope, changes nothing here."""
        return without(self.study["saes"][sae], SCOPE_KEYS)

    def probe_config(self) -> dict:
        return without(self.study["probe"], SCOPE_KEYS)

    def heads_config(self) -> dict:
        """A heads job's section: without its scope and the viewer's example count."""
        return without(self.study["heads"], ("datasets", "n_examples"))

    def section(self, name: str) -> dict:
        return self.study[name]

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
