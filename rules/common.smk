# Targets, paths and per-job config slices: the only logic the rules use.


from workflow.config import as_json, code_version
from workflow.models import SITES

MODELS = list(STUDY["models"])
DATASETS = list(STUDY["datasets"])
VARIANTS = ["pretrained", "finetuned"]


wildcard_constraints:
    model="|".join(MODELS),
    dataset="|".join(DATASETS),
    variant="pretrained|finetuned",
    split="train|test",


def model_spec(model):
    return STUDY["models"][model]


def finetuned_dir(model, dataset):
    return f"results/models/{model}/{dataset}"


def variant_source(w):
    """What the extract stage loads: the source as configured, or the fine-tuned folder."""
    if w.variant == "pretrained":
        return model_spec(w.model)["source"]
    return finetuned_dir(w.model, w.dataset)


def variant_inputs(w):
    if w.variant == "pretrained":
        return []
    return [f"{finetuned_dir(w.model, w.dataset)}/model.safetensors"]


def local_files(w):
    """The files a `source: file` dataset reads: editing them re-runs the dataset."""
    spec = STUDY["datasets"][w.dataset]
    return [spec[key] for key in ("path", "test_path") if spec.get(key)]


def extract_targets(model):
    """site:layer pairs extracted for a model, e.g. ['resid_post:2', ...], in a
    canonical order so that reordering the config's lists re-runs nothing."""
    sites = sorted(STUDY["sites"], key=SITES.index)
    return [f"{site}:{layer}" for layer in sorted(model_spec(model)["layers"]) for site in sites]


def all_extractions():
    return expand(
        "results/activations/{model}/{variant}/{dataset}/{split}/extract.json",
        model=MODELS,
        variant=VARIANTS,
        dataset=DATASETS,
        split=STUDY["extract"]["splits"],
    )


def all_reports():
    return expand("results/reports/{model}/{dataset}/index.html", model=MODELS, dataset=DATASETS)
