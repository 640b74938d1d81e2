rule finetune:
    input:
        train="results/tokens/{model}/{dataset}/train.parquet",
        test="results/tokens/{model}/{dataset}/test.parquet",
        meta="results/data/{dataset}/meta.json",
    output:
        metrics="results/models/{model}/{dataset}/metrics.json",
        weights="results/models/{model}/{dataset}/model.safetensors",
    params:
        source=lambda w: model_spec(w.model)["source"],
        cfg=lambda w: as_json(model_spec(w.model)["finetune"]),
        code=code_version("finetune"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/finetune/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/finetune/{model}/{dataset}.tsv"
    shell:
        "python -m workflow finetune --model {params.source:q} --train-tokens {input.train}"
        " --test-tokens {input.test} --meta {input.meta} --config {params.cfg:q}"
        " --out-dir $(dirname {output.metrics}) > {log} 2>&1"
