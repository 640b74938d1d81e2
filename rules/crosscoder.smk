# One crosscoder per (model, dataset, site, layer, recipe) of its scope, on both variants'
# activations of the same tokens. Each job gets only its own recipe as params.


rule crosscoder:
    input:
        train=expand(layout.ACTIVATIONS.pattern("summary", split="train"), variant=VARIANTS, allow_missing=True),
        test=expand(layout.ACTIVATIONS.pattern("summary", split="test"), variant=VARIANTS, allow_missing=True),
    output:
        **files(layout.CROSSCODER, "weights", "cfg", "training_log", "latents", "summary"),
    params:
        sets=lambda w: " ".join(
            f"--{v}-{split} {layout.ACTIVATION_SET.path(variant=v, split=split, model=w.model, dataset=w.dataset, site=w.site, layer=w.layer)}"
            for v in VARIANTS
            for split in ("train", "test")
        ),
        recipe=lambda w: as_json(PLAN.crosscoder_recipe(w.crosscoder)),
        cfg=as_json(PLAN.crosscoder_config()),
        source=lambda w: PLAN.model(w.model)["source"],
        out=layout.CROSSCODER.pattern(),
        code=code_version("crosscoder"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("crosscoder", "{model}/{dataset}/{site}/L{layer}/{crosscoder}"),
    benchmark:
        layout.benchmark("crosscoder", "{model}/{dataset}/{site}/L{layer}/{crosscoder}")
    shell:
        "python -m workflow crosscoder {params.sets} --recipe {params.recipe:q} --name {wildcards.crosscoder}"
        " --config {params.cfg:q} --source {params.source:q} --out {params.out} > {log} 2>&1"
