rule report:
    input:
        unpack(report_inputs),
        meta="results/data/{dataset}/meta.json",
        metrics="results/models/{model}/{dataset}/metrics.json",
        similarity="results/analysis/{model}/{dataset}/similarity.parquet",
        plot="results/analysis/{model}/{dataset}/similarity.png",
        head="results/heads/{model}/{dataset}/metrics.json",
        extracts=lambda w: expand(
            "results/activations/{{model}}/{variant}/{{dataset}}/{split}/extract.json",
            variant=VARIANTS,
            split=STUDY["extract"]["splits"],
        ),
    output:
        directory("results/reports/{model}/{dataset}"),
    params:
        folders=report_args,
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
        " --plot {input.plot} --head {input.head} --extracts {input.extracts} {params.folders} --out-dir {output} > {log} 2>&1"


rule report_index:
    input:
        pages=all_reports(),
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
        "python -m workflow report index --pages {input.pages} --out {output} > {log} 2>&1"
