# One SAE per (model, variant, dataset, site, layer, recipe). Each job gets only its own
# recipe (and its architecture's code version) as params, so editing one recipe re-runs
# that recipe's SAEs and their dependants.


train_sae_job = stage_job("train_sae", "{model}/{variant}/{dataset}/{site}/L{layer}/{sae}")


rule train_sae:
    input:
        layout.ACTIVATIONS.pattern("summary", split="train"),
    output:
        **files(layout.SAE, "weights", "cfg", "training_log"),
    params:
        acts=layout.ACTIVATION_SET.pattern(split="train"),
        recipe=lambda w: as_json(PLAN.sae_recipe(w.sae)),
        code=lambda w: code_version("train_sae", PLAN.sae_recipe(w.sae)["architecture"]),
        source=lambda w: PLAN.model(w.model)["source"],
        max_length=lambda w: PLAN.model(w.model)["max_length"],
        out=layout.SAE.pattern(),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        train_sae_job.env
    log:
        train_sae_job.log,
    benchmark:
        train_sae_job.benchmark
    shell:
        train_sae_job.shell(
            "--acts {params.acts} --recipe {params.recipe:q} --name {wildcards.sae} --source "
            "{params.source:q} --max-length {params.max_length} --out {params.out}"
        )


# The seed baseline: a second pretrained SAE of the recipe with seed + 1 (the diff's noise floor),
# where the plan's seed_sae asks for one. The same job as train_sae on the pretrained variant's
# activations; only its recipe (the seed), its folder and its log differ.
train_sae_seed_job = stage_job("train_sae_seed", "{model}/{dataset}/{site}/L{layer}/{sae}")


use rule train_sae as train_sae_seed with:
    input:
        layout.ACTIVATIONS.pattern("summary", variant="pretrained", split="train"),
    output:
        **files(layout.SEED_SAE, "weights", "cfg", "training_log"),
    params:
        acts=layout.ACTIVATION_SET.pattern(variant="pretrained", split="train"),
        recipe=lambda w: as_json(PLAN.seed_recipe(w.sae)),
        out=layout.SEED_SAE.pattern(),
    log:
        train_sae_seed_job.log,
    benchmark:
        train_sae_seed_job.benchmark
