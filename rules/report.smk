rule report:
    input:
        meta="results/data/{dataset}/meta.json",
        metrics="results/models/{model}/{dataset}/metrics.json",
        similarity="results/analysis/{model}/{dataset}/similarity.parquet",
        plot="results/analysis/{model}/{dataset}/similarity.png",
        head="results/heads/{model}/{dataset}/metrics.json",
        evals=lambda w: sae_evals(w.model, w.dataset),
        extracts=lambda w: expand(
            "results/activations/{{model}}/{variant}/{{dataset}}/{split}/extract.json",
            variant=VARIANTS,
            split=STUDY["extract"]["splits"],
        ),
    output:
        "results/reports/{model}/{dataset}/index.html",
    params:
        code=code_version("report"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/report/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/report/{model}/{dataset}.tsv"
    shell:
        "python -m workflow report page --model {wildcards.model} --dataset {wildcards.dataset}"
        " --meta {input.meta} --metrics {input.metrics} --similarity {input.similarity}"
        " --plot {input.plot} --extracts {input.extracts} --head {input.head} --evals {input.evals}"
        " --out {output} > {log} 2>&1"


rule report_index:
    input:
        pages=all_reports(),
        metrics=expand("results/models/{model}/{dataset}/metrics.json", model=MODELS, dataset=DATASETS),
        similarity=expand("results/analysis/{model}/{dataset}/similarity.parquet", model=MODELS, dataset=DATASETS),
    output:
        "results/reports/index.html",
    params:
        code=code_version("report"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/report/index.log",
    benchmark:
        "results/benchmarks/report/index.tsv"
    shell:
        "python -m workflow report index --pages {input.pages} --metrics {input.metrics}"
        " --similarity {input.similarity} --out {output} > {log} 2>&1"
