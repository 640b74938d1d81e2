# Attention heads per (model, variant, dataset) in the `heads` scope. The scope is not passed to jobs.


heads_job = stage_job("heads", "{model}/{dataset}/{variant}")


rule heads:
    input:
        tokens=layout.TOKENS.pattern("table", split="test"),
        classifier=classifier_weights,
        lm=variant_weights,
    output:
        **files(layout.HEADS, "heads", "ablation", "patterns", "examples", "summary"),
    params:
        classifier=classifier_arg,
        lm=lm_arg,
        family=lambda w: PLAN.family(w.model),
        cfg=as_json(PLAN.heads_config()),
        out=layout.HEADS.pattern(),
        load=load_arg,
        code=code_version("heads"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        heads_job.env
    log:
        heads_job.log,
    benchmark:
        heads_job.benchmark
    shell:
        heads_job.shell(
            "--tokens {input.tokens} {params.classifier} {params.lm} --family {params.family} --config "
            "{params.cfg:q} --out-dir {params.out} --load {params.load:q}"
        )
