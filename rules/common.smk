# Targets, paths and per-job config slices: the only logic the rules use.


from workflow.config import as_json, code_version, heads_job_config, probe_job_config, sae_job_recipe
from workflow.models import SITES

MODELS = list(STUDY["models"])
DATASETS = list(STUDY["datasets"])
VARIANTS = ["pretrained", "finetuned"]


wildcard_constraints:
    model="|".join(MODELS),
    dataset="|".join(DATASETS),
    variant="pretrained|finetuned",
    split="train|test",
    site="|".join(SITES),
    layer=r"\d+",
    sae="|".join(STUDY["saes"]) or "(?!)",


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
    """Every (model, dataset) report folder."""
    return expand("results/reports/{model}/{dataset}", model=MODELS, dataset=DATASETS)


def sae_folder_pattern():
    return "results/saes/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}"


def sae_recipe(w):
    """The job's own recipe (scope keys removed): editing another recipe changes nothing here."""
    return sae_job_recipe(STUDY["saes"][w.sae])


def variant_classifier(w):
    """The task classifier an SAE of this variant is spliced into."""
    if w.variant == "pretrained":
        return f"results/heads/{w.model}/{w.dataset}/model.safetensors"
    return f"{finetuned_dir(w.model, w.dataset)}/model.safetensors"


def variant_lm(w):
    """Causal-LM source of the variant (GPT-2 family), or '' where there is no LM head."""
    return sae_lm(w.model, w.variant, w.dataset)


def sae_scope(model, dataset, sae):
    """(site, layer) pairs where recipe `sae` runs for (model, dataset), as its scope allows."""
    recipe = STUDY["saes"][sae]
    if recipe.get("datasets") and dataset not in recipe["datasets"]:
        return []
    sites = [s for s in sorted(STUDY["sites"], key=SITES.index) if s in (recipe.get("sites") or STUDY["sites"])]
    layers = [l for l in sorted(model_spec(model)["layers"]) if l in (recipe.get("layers") or model_spec(model)["layers"])]
    return [(site, layer) for site in sites for layer in layers]


def sae_evals(model, dataset):
    """eval.json of every SAE of (model, dataset)."""
    return [
        f"results/saes/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}/eval.json"
        for sae in STUDY["saes"]
        for site, layer in sae_scope(model, dataset, sae)
        for variant in VARIANTS
    ]


def all_sae_evals():
    return [path for model in MODELS for dataset in DATASETS for path in sae_evals(model, dataset)]


def diff_folder_pattern():
    return "results/analysis/{model}/{dataset}/{site}/L{layer}/{sae}"


def sae_lm(model, variant, dataset):
    """Causal-LM source of a variant (GPT-2 family), or '' where there is no LM head."""
    if model_spec(model).get("family") != "gpt2":
        return ""
    return model_spec(model)["source"] if variant == "pretrained" else finetuned_dir(model, dataset)


def diff_summaries(model, dataset, sae):
    """diff.json of every (site, layer) of a recipe, in scope order."""
    return [
        f"results/analysis/{model}/{dataset}/{site}/L{layer}/{sae}/diff.json"
        for site, layer in sae_scope(model, dataset, sae)
    ]


def all_diff_summaries():
    return [
        f"results/analysis/{model}/{dataset}/diff/{sae}/categories.parquet"
        for model in MODELS
        for dataset in DATASETS
        for sae in STUDY["saes"]
        if sae_scope(model, dataset, sae)
    ]


def layer_saes(model, dataset, site, layer):
    """Recipes with an SAE at this (site, layer) of (model, dataset)."""
    return [sae for sae in STUDY["saes"] if (site, int(layer)) in sae_scope(model, dataset, sae)]


def layer_sae_dirs(model, variant, dataset, site, layer):
    """{recipe: SAE folder} of every SAE of a variant at this (site, layer)."""
    return {
        sae: sae_folder_pattern().format(model=model, variant=variant, dataset=dataset, site=site, layer=layer, sae=sae)
        for sae in layer_saes(model, dataset, site, layer)
    }


def cluster_plan(model, dataset):
    """What the cluster job of (model, dataset) clusters: each variant/site/layer's test set and SAEs."""
    return {
        f"{variant}/{site}/L{layer}": {
            "acts": f"results/activations/{model}/{variant}/{dataset}/test/{site}/L{layer}",
            "saes": layer_sae_dirs(model, variant, dataset, site, layer),
        }
        for variant in VARIANTS
        for site, layer in probe_scope(model, dataset)
    }


def layer_sae_args(w):
    """--sae name=folder for every SAE of the job's variant at its (site, layer)."""
    dirs = layer_sae_dirs(w.model, w.variant, w.dataset, w.site, w.layer)
    return " ".join(f"--sae {sae}={folder}" for sae, folder in dirs.items())


def layer_sae_features(w):
    """features.parquet of those SAEs: probes name their latents' top tokens."""
    return [f"{folder}/features.parquet" for folder in layer_sae_dirs(w.model, w.variant, w.dataset, w.site, w.layer).values()]


def model_family(w):
    return model_spec(w.model)["family"]


def stored_layers(model):
    """(site, layer) of every stored activation set of a model, in canonical order."""
    return [tuple(target.split(":")) for target in extract_targets(model)]


def probe_scope(model, dataset):
    """(site, layer) pairs probed and clustered for (model, dataset), as `probe:` scopes them."""
    scope = STUDY["probe"]
    if scope.get("datasets") and dataset not in scope["datasets"]:
        return []
    return [
        (site, int(layer))
        for site, layer in stored_layers(model)
        if site in (scope.get("sites") or STUDY["sites"]) and int(layer) in (scope.get("layers") or [int(layer)])
    ]


def probe_dirs(model, dataset):
    """Every probe folder of (model, dataset)."""
    return [
        f"results/analysis/{model}/{dataset}/probes/{variant}/{site}/L{layer}"
        for variant in VARIANTS
        for site, layer in probe_scope(model, dataset)
    ]


def all_probe_summaries():
    return [
        f"results/analysis/{model}/{dataset}/{what}"
        for model in MODELS
        for dataset in DATASETS
        if probe_scope(model, dataset)
        for what in ("probe_summary/probes.parquet", "clusters/cluster.json")
    ]


def heads_datasets():
    """Datasets whose attention heads are analysed, as `heads:` scopes them."""
    scope = STUDY["heads"].get("datasets")
    return [dataset for dataset in DATASETS if not scope or dataset in scope]


def all_heads_summaries():
    return [
        f"results/analysis/{model}/{dataset}/heads_summary/changes.parquet"
        for model in MODELS
        for dataset in heads_datasets()
    ]


def report_inputs(w):
    """Everything the report folder of (model, dataset) shows, as named lists of files
    (the report job reads them; Snakemake re-runs it when any of them changes)."""
    model, dataset = w.model, w.dataset
    sae_dirs = [path[: -len("/eval.json")] for path in sae_evals(model, dataset)]
    recipes = [sae for sae in STUDY["saes"] if sae_scope(model, dataset, sae)]
    diff_dirs = [
        diff_folder_pattern().format(model=model, dataset=dataset, site=site, layer=layer, sae=sae)
        for sae in recipes
        for site, layer in sae_scope(model, dataset, sae)
    ]
    analysis = f"results/analysis/{model}/{dataset}"
    probed = bool(probe_scope(model, dataset))
    return {
        "saes": [f"{d}/{name}" for d in sae_dirs for name in
                 ("eval.json", "features.json", "features.parquet", "examples.parquet", "sentences.parquet")],
        "diffs": [f"{d}/{name}" for d in diff_dirs for name in ("diff.json", "diff.parquet", "changed.parquet")],
        "diff_summaries": [f"{analysis}/diff/{sae}/{name}.png" for sae in recipes
                           for name in ("categories", "transfer", "decoder_cosine")],
        "probes": [f"{analysis}/probe_summary/{name}" for name in
                   ("probes.parquet", "sparse.parquet", "ranked.parquet", "tokens.parquet", "probe_accuracy.png", "sparse.png")]
        if probed else [],
        "clusters": [f"{analysis}/clusters/{name}" for name in ("scores.parquet", "clusters.parquet", "clusters.png")]
        if probed else [],
        "heads": [f"{analysis}/heads_summary/{name}" for name in
                  ("changes.parquet", "ablation.png", "pattern_change.png", "patterns.html")]
        if dataset in heads_datasets() else [],
    }


def report_args(w):
    """The report job's folder arguments, derived from `report_inputs`."""
    inputs = report_inputs(w)
    folders = lambda paths: sorted({os.path.dirname(p) for p in paths})
    args = [
        "--saes " + " ".join(folders(inputs["saes"])) if inputs["saes"] else "",
        "--diffs " + " ".join(folders(inputs["diffs"])) if inputs["diffs"] else "",
        "--diff-summaries " + " ".join(folders(inputs["diff_summaries"])) if inputs["diff_summaries"] else "",
        f"--probe-summary {folders(inputs['probes'])[0]}" if inputs["probes"] else "",
        f"--clusters {folders(inputs['clusters'])[0]}" if inputs["clusters"] else "",
        f"--heads-summary {folders(inputs['heads'])[0]}" if inputs["heads"] else "",
    ]
    return " ".join(a for a in args if a)
