"""The job plan of models trained from scratch (a part of `workflow.plan.Plan`): the slices of a
scratch model's entry its `init_model` and `pretrain` jobs receive, the `emergence` job of each
scratch model on its corpus (and the SAEs it scores), and the `ground_truth` jobs that score the
diffing methods where a boards dataset declares a change (its truth is known).
"""

from __future__ import annotations

from workflow import layout


class ScratchJobs:
    """Mixed into `Plan`; reads ``self.study``, ``self.model(name)`` and Plan's scopes."""

    study: dict
    models: list[str]
    saes: list[str]

    # the scratch block's keys that shape the untrained model (the rest are the training run's)
    SCRATCH_SHAPE = ("family", "layers", "d_model", "heads", "kv_heads", "d_mlp", "dropout", "positions", "seed")

    def scratch(self, model: str) -> bool:
        """Whether the model is trained here from random weights (source scratch, stage pretrain)."""
        return "scratch" in self.model(model) and "scratch_vocab" in self.model(model)

    def model_inputs(self, model: str) -> list[str]:
        """Files a job that loads the pretrained model reads: a scratch model's trained weights."""
        return [layout.SCRATCH.file("weights", model=model)] if self.scratch(model) else []

    def tokenizer_source(self, model: str) -> str:
        """Where the tokens stage takes the tokenizer from: the source, or a scratch model's untrained
        folder (the same tokenizer, there before training, which reads tokens of the corpus)."""
        return layout.SCRATCH_INIT.path(model=model) if self.scratch(model) else self.model(model)["source"]

    def tokenizer_inputs(self, model: str) -> list[str]:
        return [layout.SCRATCH_INIT.file("weights", model=model)] if self.scratch(model) else []

    def init_spec(self, model: str) -> dict:
        """The init_model job's slice of a scratch model's entry: its shape and max_length."""
        spec = self.model(model)
        shape = {k: v for k, v in spec["scratch"].items() if k in self.SCRATCH_SHAPE}
        return {"scratch": shape, "max_length": spec["max_length"]}

    def pretrain_config(self, model: str) -> dict:
        """The pretrain job's slice: the training run's keys, and the positions."""
        s = self.model(model)["scratch"]
        return {
            k: v for k, v in s.items() if k != "corpus" and (k not in self.SCRATCH_SHAPE or k in ("positions", "seed"))
        }

    def corpus(self, model: str) -> str:
        return self.model(model)["scratch"]["corpus"]

    def emergence_pairs(self) -> list[tuple[str, str]]:
        """(scratch model, its corpus) of every emergence job."""
        return [(m, self.corpus(m)) for m in self.models if self.scratch(m)]

    def emergence_saes(self, model: str) -> dict[str, str]:
        """recipe:site:layer -> the pretrained variant's SAE folder on the corpus, for every stored pair."""
        corpus = self.corpus(model)
        out = {}
        for site, layer in self.stored(model):
            for sae, folder in self.layer_saes(model, "pretrained", corpus, site, layer).items():
                out[f"{sae}:{layout.Target(site, layer)}"] = folder  # read back by the emergence stage
        return out

    def changed(self, dataset: str) -> bool:
        """Whether the dataset is a boards corpus with a declared change (its truth is known)."""
        spec = self.study["datasets"][dataset]
        return spec["source"] == "abstractions" and bool(spec.get("change"))

    def truth_dirs(self, model: str, dataset: str) -> list[str]:
        """Where the diffing methods are scored against the known change: every diffed (site, layer,
        recipe) of a dataset with a declared change."""
        if not self.changed(dataset):
            return []
        return [
            layout.TRUTH.path(model=model, dataset=dataset, site=site, layer=layer, sae=sae)
            for sae in self.saes
            for site, layer in self.sae_scope(model, dataset, sae)
        ]

    def truth_args(self, model: str, dataset: str, site: str, layer: int, sae: str) -> list[str]:
        """The ground_truth job's --stagewise and --crosscoders arguments."""
        return self.methods_args(model, dataset, site, layer, sae)

    def scratch_report_inputs(self, model: str, dataset: str) -> dict[str, list[str]]:
        """What a scratch model's report pages show besides the rest: its emergence on its corpus, and
        the methods scored against the truth where the dataset declares a change."""
        if not self.scratch(model):
            return {"emergence": [], "truth": []}
        w = {"model": model, "dataset": self.corpus(model)}
        truth = [f"{d}/{layout.TRUTH.names['summary']}" for d in self.truth_dirs(model, dataset)]
        return {"emergence": layout.EMERGENCE.files("summary", "sae", "plot", **w), "truth": truth}

    def scratch_report_args(self, model: str, dataset: str) -> list[str]:
        if not self.scratch(model):
            return []
        truth = self.truth_dirs(model, dataset)
        emergence = ["--emergence", layout.EMERGENCE.path(model=model, dataset=self.corpus(model))]
        return emergence + (["--truth", *truth] if truth else [])
