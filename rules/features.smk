rule features:
    input:
        weights=rules.train_sae.output.weights,
        cfg=rules.train_sae.output.cfg,
        acts="results/activations/{model}/{variant}/{dataset}/test/extract.json",
        tokens="results/tokens/{model}/{dataset}/test.parquet",
        meta="results/data/{dataset}/meta.json",
    output:
        table=sae_folder_pattern() + "/features.parquet",
        examples=sae_folder_pattern() + "/examples.parquet",
        sentences=sae_folder_pattern() + "/sentences.parquet",
        summary=sae_folder_pattern() + "/features.json",
        heatmap=sae_folder_pattern() + "/features.png",
        sentence=sae_folder_pattern() + "/sentence.png",
    params:
        acts="results/activations/{model}/{variant}/{dataset}/test/{site}/L{layer}",
        cfg=as_json(STUDY["features"]),
        code=code_version("features"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/features/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/features/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}.tsv"
    shell:
        "python -m workflow features --sae $(dirname {output.table}) --acts {params.acts} --tokens {input.tokens}"
        " --meta {input.meta} --config {params.cfg:q} > {log} 2>&1"
