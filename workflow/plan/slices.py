"""Each job's slice of the config: passed as params, so that editing one recipe re-runs one recipe."""

from __future__ import annotations

import json

SCOPE_KEYS = ("datasets", "layers", "sites")  # where a section runs; never passed to its jobs
FROZEN_KEYS = ("seed", "max_train_docs", "eval_batch_size")  # the finetune keys the frozen classifier reads


def as_json(obj) -> str:
    """Canonical JSON of a config slice, passed to a stage and compared by Snakemake."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def without(section: dict, keys) -> dict:
    """A config section without some of its keys (scope keys, display-only keys)."""
    return {k: v for k, v in section.items() if k not in keys}


class Slices:
    """Part of `workflow.plan.Plan`: the config slice each job receives."""

    study: dict

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
