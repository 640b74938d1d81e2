# Pretrained vs fine-tuned SAE of one (site, layer, recipe).


diff_job = stage_job("diff", "{model}/{dataset}/{site}/L{layer}/{sae}")


rule diff:
    input:
        features=expand(layout.SAE.pattern("features"), variant=VARIANTS, allow_missing=True),
        acts=expand(layout.ACTIVATIONS.pattern("summary", split="test"), variant=VARIANTS, allow_missing=True),
        tokens=layout.TOKENS.pattern("table", split="test"),
        classifiers=lambda w: [f for v in VARIANTS for f in PLAN.classifier_inputs(w.model, v, w.dataset)],
        models=lambda w: PLAN.variant_inputs(w.model, "finetuned", w.dataset),
        seed=lambda w: [f"{d}/{layout.SEED_SAE.names['cfg']}" for d in [PLAN.seed_sae(w.model, w.dataset, w.site, int(w.layer), w.sae)] if d],
    output:
        **files(layout.DIFF, "table", "transfer", "changed", "summary"),
    params:
        args=lambda w: " ".join(PLAN.diff_args(w.model, w.dataset, w.site, int(w.layer), w.sae)),
        cfg=as_json(PLAN.section("diff")),
        eval_cfg=as_json(PLAN.section("sae_eval")),
        out=layout.DIFF.pattern(),
        load=load_arg,
        code=code_version("diff"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        diff_job.env
    log:
        diff_job.log,
    benchmark:
        diff_job.benchmark
    shell:
        diff_job.shell(
            "{params.args} --tokens {input.tokens} --config {params.cfg:q} --eval-config "
            "{params.eval_cfg:q} --out-dir {params.out} --load {params.load:q}"
        )
