rule tokens:
    input:
        layout.DATA.pattern("split"),
    output:
        layout.TOKENS.pattern("table"),
    params:
        source=lambda w: PLAN.model(w.model)["source"],
        max_length=lambda w: PLAN.model(w.model)["max_length"],
        code=code_version("tokens"),
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("tokens", "{model}/{dataset}/{split}"),
    benchmark:
        layout.benchmark("tokens", "{model}/{dataset}/{split}")
    shell:
        "python -m workflow tokens --data {input} --model {params.source:q}"
        " --max-length {params.max_length} --out {output} > {log} 2>&1"
