"""Every path of a study, once: folder templates and the files each folder holds.

Templates use Snakemake's wildcard syntax (``{model}``, ``{dataset}``, ...); rules
take their outputs from here (`Folder.pattern`), the plan fills them in
(`Folder.path`, `Folder.file`), and stages name the files they write inside a
folder they are given (`Folder.names`). A stage never parses a folder's name for
what it holds: that is in the manifest, cfg.json or summary JSON beside the data.

>>> SAE.pattern("eval")
'results/saes/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}/eval.json'
>>> TOKENS.file("table", model="minilm", dataset="news", split="test")
'results/tokens/minilm/news/test.parquet'
>>> TOKENS.pattern("table", split="train")
'results/tokens/{model}/{dataset}/train.parquet'

Command lines name an activation set as ``site:layer`` (`Target`) and what a probe or k-means reads
as ``raw`` or ``sae:<recipe>`` (`Representation`); each has one parser, here.

>>> Target.parse("resid_post:4")
Target(site='resid_post', layer=4)
>>> str(Representation.parse("sae:topk")), Representation.parse("sae:topk").name
('sae:topk', 'topk')
"""

from __future__ import annotations

from dataclasses import dataclass, field

RESULTS = "results"
VARIANTS = ("pretrained", "finetuned")  # the two models a study compares: the {variant} wildcard
# a crosscoder's sides as the report and the explorer list them beside SAE recipes ("crosscoder.<name>");
# recipe names are [A-Za-z0-9_-]: no SAE recipe starts so
CROSSCODER_PREFIX = "crosscoder."


@dataclass(frozen=True, order=True)
class Target:
    """One activation set of a model: a (site, layer) pair, written ``site:layer`` on command lines."""

    site: str
    layer: int

    def __str__(self) -> str:
        return f"{self.site}:{self.layer}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """``resid_post:4`` -> Target("resid_post", 4); anything else is an error naming the text."""
        site, sep, layer = text.partition(":")
        if not (sep and site and layer.isdigit()):
            raise ValueError(f"expected SITE:LAYER (e.g. resid_post:4), got {text!r}")
        return cls(site, int(layer))


@dataclass(frozen=True)
class Representation:
    """What a probe or k-means reads: the raw activations (``raw``) or an SAE's codes (``sae:<recipe>``)."""

    kind: str  # "raw" or "sae"
    name: str | None = None  # the SAE recipe

    RAW = "raw"
    SAE = "sae"

    def __str__(self) -> str:
        return self.kind if self.name is None else f"{self.kind}:{self.name}"

    @classmethod
    def sae(cls, recipe: str) -> Representation:
        return cls(cls.SAE, recipe)

    @classmethod
    def parse(cls, text: str) -> Representation:
        """``raw`` or ``sae:<recipe>``; anything else is an error naming the text."""
        kind, sep, name = text.partition(":")
        if text == cls.RAW:
            return cls(cls.RAW)
        if kind != cls.SAE or not sep or not name:
            raise ValueError(f"expected raw or sae:<recipe>, got {text!r}")
        return cls(kind, name)


class _Keep(dict):
    """format_map mapping that writes a missing wildcard back as itself."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


@dataclass(frozen=True)
class Folder:
    """A folder template and the names of the files inside it."""

    template: str
    names: dict[str, str] = field(default_factory=dict)

    def pattern(self, name: str | None = None, **fixed) -> str:
        """The template of the folder, or of file `name` inside it, with the wildcards in `fixed`
        filled in and the others left as they are."""
        template = self.template if name is None else f"{self.template}/{self.names[name]}"
        return template.format_map(_Keep(fixed)) if fixed else template

    def path(self, **wildcards) -> str:
        """The folder of these wildcards."""
        return self.template.format(**wildcards)

    def file(self, name: str, **wildcards) -> str:
        """File `name` in the folder of these wildcards."""
        return self.pattern(name).format(**wildcards)

    def files(self, *names: str, **wildcards) -> list[str]:
        return [self.file(name, **wildcards) for name in names]

    def inside(self, folders, *names: str) -> list[str]:
        """Files `names` inside each of `folders` (concrete folders of this template)."""
        return [f"{folder}/{self.names[name]}" for folder in folders for name in names]


DATA = Folder(
    "results/data/{dataset}",
    {"train": "train.parquet", "test": "test.parquet", "split": "{split}.parquet", "meta": "meta.json"},
)
# the tokens table of a split, and how much truncation cut from it
TOKENS = Folder("results/tokens/{model}/{dataset}", {"table": "{split}.parquet", "truncation": "{split}.json"})
CHECKSUMS = "checksums.json"  # each file's bytes and SHA-256, in every SAE, crosscoder and model folder
CLASSIFIER_FILES = {
    "weights": "model.safetensors",
    "metrics": "metrics.json",
    "config": "config.json",
    "checksums": CHECKSUMS,
}
FINETUNE_KINDS = ("classify", "causal_lm", "masked_lm")  # fine-tunes the workflow makes (the {kind} wildcard)
# a save_pretrained folder (LoRA: merged; the adapter beside it)
FINETUNED = Folder(
    "results/models/{model}/{kind}/{dataset}",
    {**CLASSIFIER_FILES, "adapter": "adapter", "checkpoint": "checkpoint.pt"},  # checkpoint: while training
)
# a model of source scratch: untrained (stage init_model), then trained (stage pretrain)
SCRATCH_INIT = Folder("results/models/{model}/scratch/init", {**CLASSIFIER_FILES})
SCRATCH = Folder(
    "results/models/{model}/scratch/trained",
    {
        "final": "final",  # the trained model: the pretrained variant
        "weights": "final/model.safetensors",
        "steps": "steps",  # steps/step-NNNNNN/: save_pretrained snapshots at log-spaced steps
        "metrics": "training.json",
        "checkpoint": "checkpoint.pt",  # while training
        "staging": "snapshots-partial",  # while training: the snapshots so far
        "checksums": CHECKSUMS,
    },
)
# a variant's body + a classifier fitted on its frozen features
FROZEN = Folder("results/frozen_classifiers/{model}/{variant}/{dataset}", CLASSIFIER_FILES)
ACTIVATIONS = Folder("results/activations/{model}/{variant}/{dataset}/{split}", {"summary": "extract.json"})
SET_SUBFOLDER = "{site}/L{layer}"  # an activation set inside its extract folder
ACTIVATION_SET = Folder(f"{ACTIVATIONS.template}/{SET_SUBFOLDER}", {"manifest": "manifest.json"})
ANALYSIS = "results/analysis/{model}/{dataset}"
SIMILARITY = Folder(ANALYSIS, {"table": "similarity.parquet", "plot": "similarity.png"})
# when and where each known abstraction forms in a scratch model (its corpus's analysis folder)
EMERGENCE = Folder(
    ANALYSIS + "/emergence",
    {
        "table": "emergence.parquet",
        "cka": "cka.parquet",
        "sae": "sae_alignment.parquet",
        "summary": "emergence.json",
        "plot": "emergence.png",
    },
)
SAE = Folder(
    "results/saes/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}",
    {
        "weights": "sae_weights.safetensors",  # SAELens' names: the folder loads with SAE.load_from_disk
        "cfg": "cfg.json",
        "training_log": "training_log.parquet",
        "checkpoint": "checkpoint.pt",  # the resumable training state, removed when training ends
        "checksums": CHECKSUMS,  # of the SAE itself: weights, cfg and training log
        "eval": "eval.json",
        "sparsity": "sparsity.safetensors",
        "features": "features.parquet",
        "examples": "examples.parquet",
        "sentences": "sentences.parquet",
        "features_summary": "features.json",
        "heatmap": "features.png",
        "sentence": "sentence.png",
    },
)
DIFF = Folder(
    ANALYSIS + "/{site}/L{layer}/{sae}",
    {"table": "diff.parquet", "transfer": "transfer.parquet", "changed": "changed.parquet", "summary": "diff.json"},
)
# a second pretrained SAE of the recipe, seed + 1: the diff's noise floor
SEED_SAE = Folder(
    "results/seed_baselines/{model}/{dataset}/{site}/L{layer}/{sae}",
    {k: SAE.names[k] for k in ("weights", "cfg", "training_log", "checkpoint", "checksums")},
)
CROSSCODER = Folder(
    "results/crosscoders/{model}/{dataset}/{site}/L{layer}/{crosscoder}",
    {
        "weights": "crosscoder_weights.safetensors",
        "cfg": "cfg.json",
        "training_log": "training_log.parquet",
        "checkpoint": "checkpoint.pt",
        "checksums": CHECKSUMS,
        "latents": "latents.parquet",
        "summary": "crosscoder.json",
        # what each latent responds to (the features stage's statistics, on both variants' test tokens)
        "features": "features.parquet",
        "examples": "examples.parquet",
        "features_summary": "features.json",
    },
)
# the pretrained SAE after more training on the fine-tuned activations, and how each feature moved
STAGEWISE = Folder(
    ANALYSIS + "/{site}/L{layer}/{sae}/stagewise",
    {
        **{k: SAE.names[k] for k in ("weights", "cfg", "training_log", "checkpoint", "checksums")},
        "movement": "movement.parquet",
        "summary": "stagewise.json",
    },
)
# the diffing methods side by side, per pretrained feature, and their agreement
METHODS = Folder(
    ANALYSIS + "/{site}/L{layer}/{sae}/methods",
    {"table": "methods.parquet", "summary": "methods.json"},
)
# the diffing methods scored against a declared change of a boards corpus
TRUTH = Folder(ANALYSIS + "/{site}/L{layer}/{sae}/truth", {"table": "truth.parquet", "summary": "truth.json"})
DIFF_SUMMARY = Folder(
    ANALYSIS + "/diff/{sae}",
    {
        "categories": "categories.parquet",
        "transfer": "transfer.parquet",
        "categories_plot": "categories.png",
        "transfer_plot": "transfer.png",
        "cosine_plot": "decoder_cosine.png",
    },
)
PROBE = Folder(
    ANALYSIS + "/probes/{variant}/{site}/L{layer}",
    {
        "sequence": "sequence.parquet",
        "sparse": "sparse.parquet",
        "ranked": "ranked.parquet",
        "tokens": "tokens.parquet",
        "summary": "probe.json",
    },
)
PROBE_SUMMARY = Folder(
    ANALYSIS + "/probe_summary",
    {
        "probes": "probes.parquet",
        "sparse": "sparse.parquet",
        "ranked": "ranked.parquet",
        "tokens": "tokens.parquet",
        "accuracy_plot": "probe_accuracy.png",
        "sparse_plot": "sparse.png",
    },
)
KMEANS = Folder(
    ANALYSIS + "/kmeans",
    {"clusters": "clusters.parquet", "scores": "scores.parquet", "plot": "clusters.png", "summary": "kmeans.json"},
)
LM_COMPARE = Folder(
    ANALYSIS + "/lm",
    {"tokens": "tokens.parquet", "documents": "documents.parquet", "summary": "lm.json", "plot": "kl.png"},
)
HEADS = Folder(
    ANALYSIS + "/heads/{variant}",
    {
        "heads": "heads.parquet",
        "ablation": "ablation.parquet",
        "patterns": "patterns.safetensors",
        "examples": "patterns.json",
        "summary": "heads.json",
    },
)
HEADS_SUMMARY = Folder(
    ANALYSIS + "/heads_summary",
    {
        "heads": "heads.parquet",
        "ablation": "ablation.parquet",
        "changes": "changes.parquet",
        "ablation_plot": "ablation.png",
        "change_plot": "pattern_change.png",
        "viewer": "patterns.html",
    },
)
REPORT = Folder(
    "results/reports/{model}/{dataset}",
    {
        "page": "index.html",
        "features": "feature.html",
        "sentences": "sentences.html",
        "heads": "heads.html",
        "summary": "summary.json",
    },
)
REPORT_INDEX = Folder("results/reports", {"page": "index.html"})


def log(rule: str, wildcards: str = "") -> str:
    """The log file of a rule's job: logs/<rule>/<wildcards>.log (`wildcards` like ``{model}/{dataset}``)."""
    return f"logs/{rule}/{wildcards or rule}.log"


def benchmark(rule: str, wildcards: str = "") -> str:
    """The benchmark TSV of a rule's job, beside the results."""
    return f"{RESULTS}/benchmarks/{rule}/{wildcards or rule}.tsv"
