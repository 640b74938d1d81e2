"""What each model's two variants are, as plain functions of the validated config (a part of
`workflow.plan.Plan`): where the fine-tuned variant comes from (its kind: a classification, causal-LM
or masked-LM fine-tune the workflow makes, or an existing checkpoint), what each variant's body, task
classifier and language model are loaded from, which datasets have labels, and what a page leaves
out, with why.
"""

from __future__ import annotations

from workflow import layout
from workflow.layout import VARIANTS


class Variants:
    """Mixed into `Plan`; reads ``self.study`` and ``self.model(name)``."""

    study: dict
    models: list[str]
    datasets: list[str]

    def kind(self, model: str) -> str:
        """Where the model's fine-tuned variant comes from: classify, causal_lm, masked_lm or checkpoint."""
        return self.model(model)["finetuned"]["kind"]

    def made(self, model: str) -> bool:
        """Whether a `finetune` job makes the fine-tuned variant (every kind but checkpoint)."""
        return self.kind(model) in layout.FINETUNE_KINDS

    def labelled(self, dataset: str) -> bool:
        return self.study["datasets"][dataset]["labelled"]

    def finetuned_dir(self, model: str, dataset: str) -> str:
        """The folder the `finetune` job writes (the kind is part of the path)."""
        return layout.FINETUNED.path(model=model, kind=self.kind(model), dataset=dataset)

    def variant_source(self, model: str, variant: str, dataset: str) -> str:
        """What a variant's body is loaded from: the configured source, the fine-tuned folder, or the
        checkpoint (the same for every dataset)."""
        if variant == "pretrained":
            return self.model(model)["source"]
        if not self.made(model):
            return self.model(model)["finetuned"]["source"]
        return self.finetuned_dir(model, dataset)

    def variant_inputs(self, model: str, variant: str, dataset: str) -> list[str]:
        """Files a job of this variant reads to load it: the fine-tuned weights, where a job makes them
        (and a scratch model's trained weights, which both variants start from)."""
        if variant == "pretrained" or not self.made(model):
            return self.model_inputs(model)
        return [f"{self.finetuned_dir(model, dataset)}/{layout.CLASSIFIER_FILES['weights']}"]

    def frozen_variants(self, model: str, dataset: str) -> list[str]:
        """Variants whose task classifier is fitted on frozen features (stage `frozen_classifier`):
        the pretrained one, and the fine-tuned one too unless classification fine-tuning made it;
        none on unlabelled data."""
        if not self.labelled(dataset):
            return []
        return ["pretrained"] if self.kind(model) == "classify" else list(VARIANTS)

    def classifier(self, model: str, variant: str, dataset: str) -> str | None:
        """The task classifier of a variant: the classification fine-tune, or the variant's body with a
        classifier fitted on its frozen features; None on unlabelled data."""
        if not self.labelled(dataset):
            return None
        if variant in self.frozen_variants(model, dataset):
            return layout.FROZEN.path(model=model, variant=variant, dataset=dataset)
        return self.finetuned_dir(model, dataset)

    def classifier_inputs(self, model: str, variant: str, dataset: str) -> list[str]:
        folder = self.classifier(model, variant, dataset)
        return [f"{folder}/{layout.CLASSIFIER_FILES['weights']}"] if folder else []

    def lm_spec(self, model: str, variant: str, dataset: str) -> dict | None:
        """The language model of a variant, or None where the base carries no LM head: ``source``
        (a checkpoint with its head), ``kind`` (causal or masked) and ``body`` (a folder whose body
        replaces the checkpoint's, or None). A classification fine-tune is the base's head on the
        fine-tuned body; an LM fine-tune is its own LM; a checkpoint is its own LM if it carries
        the head, else the base's head on its body."""
        spec = self.model(model)
        kind = spec["lm"]
        if not kind:
            return None
        if variant == "pretrained":
            return {"source": spec["source"], "kind": kind, "body": None}
        own = self.variant_source(model, variant, dataset)
        if self.kind(model) in ("causal_lm", "masked_lm"):
            return {"source": own, "kind": kind, "body": None}
        if self.kind(model) == "checkpoint" and spec["finetuned"]["lm"] == kind:
            return {"source": own, "kind": kind, "body": None}
        return {"source": spec["source"], "kind": kind, "body": own}

    def chat_source(self, model: str) -> str | None:
        """The model source whose tokenizer's chat template formats the documents (None: no template)."""
        return self.model(model).get("chat_source")

    def lm_compared(self, model: str) -> bool:
        """Whether the variants' LM predictions are compared (stage `lm_compare`): where the base has an LM head."""
        return bool(self.model(model)["lm"])

    def skipped(self, model: str, dataset: str) -> list[dict]:
        """Analyses left out of (model, dataset), each with the reason the report gives."""
        out = []
        if not self.labelled(dataset):
            why = "the dataset is unlabelled text"
            for name in ("class AUROC", "probes", "linear head", "task loss", "k-means and cluster purity", "heads"):
                out.append({"analysis": name, "reason": why})
        if not self.lm_compared(model):
            out.append(
                {
                    "analysis": "LM loss and KL",
                    "reason": f"{self.model(model)['source']} carries no language-model head",
                }
            )
        return out

    def studied(self, model: str, dataset: str) -> bool:
        """Whether the study compares the variants of `model` on `dataset`: everywhere, except a
        classification fine-tune on unlabelled text (there is nothing to classify)."""
        if dataset not in (self.model(model).get("datasets") or self.datasets):
            return False
        return self.labelled(dataset) or self.kind(model) != "classify"

    def pairs(self) -> list[tuple[str, str]]:
        """Every (model, dataset) the study compares."""
        return [(m, d) for m in self.models for d in self.datasets if self.studied(m, d)]

    def unstudied(self) -> list[str]:
        """Why the pairs left out of `pairs` are, for the study index."""
        return [
            f"{m} on {d}: {m} is fine-tuned by classification (kind classify), and {d} is unlabelled text"
            for m in self.models
            for d in self.datasets
            if not self.studied(m, d) and d in (self.model(m).get("datasets") or self.datasets)
        ]
