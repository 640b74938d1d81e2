rule dataset:
    input:
        local_files,
    output:
        train="results/data/{dataset}/train.parquet",
        test="results/data/{dataset}/test.parquet",
        meta="results/data/{dataset}/meta.json",
    params:
        spec=lambda w: as_json(STUDY["datasets"][w.dataset]),
        code=code_version("dataset"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/dataset/{dataset}.tsv"
    shell:
        "python -m workflow dataset --name {wildcards.dataset} --spec {params.spec:q}"
        " --out-dir $(dirname {output.meta}) > {log} 2>&1"
