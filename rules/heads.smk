# Attention heads per (model, variant, dataset) in the `heads:` scope, and one
# comparison per (model, dataset). The scope is not passed to jobs.


rule heads:
    input:
        tokens="results/tokens/{model}/{dataset}/test.parquet",
        classifier=variant_classifier,
    output:
        heads="results/analysis/{model}/{dataset}/heads/{variant}/heads.parquet",
        ablation="results/analysis/{model}/{dataset}/heads/{variant}/ablation.parquet",
        patterns="results/analysis/{model}/{dataset}/heads/{variant}/patterns.safetensors",
        examples="results/analysis/{model}/{dataset}/heads/{variant}/patterns.json",
        summary="results/analysis/{model}/{dataset}/heads/{variant}/heads.json",
    params:
        lm=lambda w: f"--lm {variant_lm(w)}" if variant_lm(w) else "",
        family=model_family,
        cfg=as_json(heads_job_config(STUDY["heads"])),
        code=code_version("heads"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/heads/{model}/{dataset}/{variant}.log",
    benchmark:
        "results/benchmarks/heads/{model}/{dataset}/{variant}.tsv"
    shell:
        "python -m workflow heads --tokens {input.tokens} --classifier $(dirname {input.classifier})"
        " {params.lm} --family {params.family} --config {params.cfg:q}"
        " --out-dir $(dirname {output.summary}) > {log} 2>&1"


rule heads_summary:
    input:
        expand("results/analysis/{{model}}/{{dataset}}/heads/{variant}/heads.json", variant=VARIANTS),
    output:
        tables=expand(
            "results/analysis/{{model}}/{{dataset}}/heads_summary/{name}.parquet",
            name=["heads", "ablation", "changes"],
        ),
        plots=expand(
            "results/analysis/{{model}}/{{dataset}}/heads_summary/{name}.png",
            name=["ablation", "pattern_change"],
        ),
        viewer="results/analysis/{model}/{dataset}/heads_summary/patterns.html",
    params:
        examples=STUDY["heads"]["n_examples"],
        title="{model} on {dataset}",
        code=code_version("heads_summary"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/heads_summary/{model}/{dataset}.log",
    shell:
        "python -m workflow heads_summary --pretrained $(dirname {input[0]}) --finetuned $(dirname {input[1]})"
        " --examples {params.examples} --title {params.title:q} --out-dir $(dirname {output.viewer}) > {log} 2>&1"
