# One crosscoder per (model, dataset, site, layer, recipe) of its scope, on both variants'
# activations of the same tokens, each side then spliced into its variant. Each job gets only
# its own recipe as params.


crosscoder_job = stage_job("crosscoder", "{model}/{dataset}/{site}/L{layer}/{crosscoder}")


rule crosscoder:
    input:
        train=expand(layout.ACTIVATIONS.pattern("summary", split="train"), variant=VARIANTS, allow_missing=True),
        test=expand(layout.ACTIVATIONS.pattern("summary", split="test"), variant=VARIANTS, allow_missing=True),
        tokens=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
        classifiers=lambda w: [f for v in VARIANTS for f in PLAN.classifier_inputs(w.model, v, w.dataset)],
        models=lambda w: PLAN.variant_inputs(w.model, "finetuned", w.dataset),
    output:
        **files(
            layout.CROSSCODER,
            "weights",
            "cfg",
            "training_log",
            "latents",
            "summary",
            "features",
            "examples",
            "features_summary",
        ),
    params:
        sets=lambda w: " ".join(
            f"--{v}-{split} {layout.ACTIVATION_SET.path(variant=v, split=split, model=w.model, dataset=w.dataset, site=w.site, layer=w.layer)}"
            for v in VARIANTS
            for split in ("train", "test")
        ),
        models=lambda w: " ".join(PLAN.variant_model_args(w.model, w.dataset)),
        eval_cfg=as_json(PLAN.section("sae_eval")),
        features_cfg=as_json(PLAN.section("features")),
        load=load_arg,
        recipe=lambda w: as_json(PLAN.crosscoder_recipe(w.crosscoder)),
        cfg=as_json(PLAN.crosscoder_config()),
        source=lambda w: PLAN.model(w.model)["source"],
        out=layout.CROSSCODER.pattern(),
        code=code_version("crosscoder"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        crosscoder_job.env
    log:
        crosscoder_job.log,
    benchmark:
        crosscoder_job.benchmark
    shell:
        crosscoder_job.shell(
            "{params.sets} --recipe {params.recipe:q} --name {wildcards.crosscoder} --config "
            "{params.cfg:q} --source {params.source:q} --out {params.out} --tokens {input.tokens} "
            "{params.models} --meta {input.meta} --eval-config {params.eval_cfg:q} --features-config "
            "{params.features_cfg:q} --load {params.load:q}"
        )
