similarity_job = stage_job("similarity", "{model}/{dataset}")


rule similarity:
    input:
        tokens=layout.TOKENS.pattern("table", split=STUDY["similarity"]["split"]),
        weights=lambda w: PLAN.variant_inputs(w.model, "finetuned", w.dataset),
    output:
        **files(layout.SIMILARITY, "table", "plot"),
    params:
        source=lambda w: PLAN.model(w.model)["source"],
        finetuned=lambda w: PLAN.variant_source(w.model, "finetuned", w.dataset),
        cfg=as_json(PLAN.section("similarity")),
        load=load_arg,
        code=code_version("similarity"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        similarity_job.env
    log:
        similarity_job.log,
    benchmark:
        similarity_job.benchmark
    shell:
        similarity_job.shell(
            "--pretrained {params.source:q} --finetuned {params.finetuned:q} --tokens {input.tokens} "
            "--config {params.cfg:q} --out-table {output.table} --out-plot {output.plot} "
            "--title '{wildcards.model} on {wildcards.dataset}' --load {params.load:q}"
        )
