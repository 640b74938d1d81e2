features_job = stage_job("features", "{model}/{variant}/{dataset}/{site}/L{layer}/{sae}")


rule features:
    input:
        **files(layout.SAE, "weights", "cfg"),
        acts=layout.ACTIVATIONS.pattern("summary", split="test"),
        tokens=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
    output:
        **files(layout.SAE, "features", "examples", "sentences", "features_summary", "heatmap", "sentence"),
    params:
        sae=parent("cfg"),
        acts=layout.ACTIVATION_SET.pattern(split="test"),
        cfg=as_json(PLAN.section("features")),
        code=code_version("features"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        features_job.env
    log:
        features_job.log,
    benchmark:
        features_job.benchmark
    shell:
        features_job.shell(
            "--sae {params.sae} --acts {params.acts} --tokens {input.tokens} --meta {input.meta} "
            "--config {params.cfg:q}"
        )
