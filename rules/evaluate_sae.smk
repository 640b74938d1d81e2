evaluate_sae_job = stage_job("evaluate_sae", "{model}/{variant}/{dataset}/{site}/L{layer}/{sae}")


rule evaluate_sae:
    input:
        **files(layout.SAE, "weights", "cfg"),
        acts=layout.ACTIVATIONS.pattern("summary", split="test"),
        tokens=layout.TOKENS.pattern("table", split="test"),
        classifier=classifier_weights,
        lm=variant_weights,
    output:
        **files(layout.SAE, "eval", "sparsity"),
    params:
        sae=parent("cfg"),
        acts=layout.ACTIVATION_SET.pattern(split="test"),
        classifier=classifier_arg,
        lm=lm_arg,
        cfg=as_json(PLAN.section("sae_eval")),
        load=load_arg,
        code=code_version("evaluate_sae"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        evaluate_sae_job.env
    log:
        evaluate_sae_job.log,
    benchmark:
        evaluate_sae_job.benchmark
    shell:
        evaluate_sae_job.shell(
            "--sae {params.sae} --acts {params.acts} --tokens {input.tokens} {params.classifier} "
            "{params.lm} --config {params.cfg:q} --load {params.load:q}"
        )
