rule similarity:
    input:
        tokens=lambda w: f"results/tokens/{w.model}/{w.dataset}/{STUDY['similarity']['split']}.parquet",
        weights="results/models/{model}/{dataset}/model.safetensors",
    output:
        table="results/analysis/{model}/{dataset}/similarity.parquet",
        plot="results/analysis/{model}/{dataset}/similarity.png",
    params:
        source=lambda w: model_spec(w.model)["source"],
        cfg=as_json(STUDY["similarity"]),
        code=code_version("similarity"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/similarity/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/similarity/{model}/{dataset}.tsv"
    shell:
        "python -m workflow similarity --pretrained {params.source:q} --finetuned $(dirname {input.weights})"
        " --tokens {input.tokens} --config {params.cfg:q} --out-table {output.table}"
        " --out-plot {output.plot} --title '{wildcards.model} on {wildcards.dataset}' > {log} 2>&1"
