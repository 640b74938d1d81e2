"""The plan's questions about the study: each model's settings, which (site, layer) pairs a section's
scope covers, which SAEs and crosscoders each layer has, and where the diffing methods run."""

from __future__ import annotations

from workflow import layout
from workflow.plan.slices import SCOPE_KEYS, without


class Scopes:
    """Part of `workflow.plan.Plan`: the study's models and the (site, layer) scope of each section."""

    study: dict
    models: list[str]
    saes: list[str]
    sites: list[str]
    _stored: dict

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
        return [str(layout.Target(site, layer)) for site, layer in self.stored(model)]

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
