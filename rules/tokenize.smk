rule tokenize:
    input:
        "results/data/{dataset}/{split}.parquet",
    output:
        "results/tokens/{model}/{dataset}/{split}.parquet",
    params:
        source=lambda w: model_spec(w.model)["source"],
        max_length=lambda w: model_spec(w.model)["max_length"],
        code=code_version("tokenize"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/tokenize/{model}/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/tokenize/{model}/{dataset}/{split}.tsv"
    shell:
        "python -m workflow tokenize --data {input} --model {params.source:q}"
        " --max-length {params.max_length} --out {output} > {log} 2>&1"
