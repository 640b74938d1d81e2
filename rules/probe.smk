# Probes per (model, variant, dataset, site, layer) in the probe scope and one
# summary per (model, dataset); clusters per (model, dataset), over the same
# scope. The scope keys are not passed to jobs: widening the scope adds probe
# jobs and re-runs only the per-(model, dataset) jobs that gather them.


rule probe:
    input:
        train_acts="results/activations/{model}/{variant}/{dataset}/train/extract.json",
        test_acts="results/activations/{model}/{variant}/{dataset}/test/extract.json",
        train_tokens="results/tokens/{model}/{dataset}/train.parquet",
        test_tokens="results/tokens/{model}/{dataset}/test.parquet",
        meta="results/data/{dataset}/meta.json",
        features=layer_sae_features,
    output:
        sequence="results/analysis/{model}/{dataset}/probes/{variant}/{site}/L{layer}/sequence.parquet",
        sparse="results/analysis/{model}/{dataset}/probes/{variant}/{site}/L{layer}/sparse.parquet",
        ranked="results/analysis/{model}/{dataset}/probes/{variant}/{site}/L{layer}/ranked.parquet",
        tokens="results/analysis/{model}/{dataset}/probes/{variant}/{site}/L{layer}/tokens.parquet",
        summary="results/analysis/{model}/{dataset}/probes/{variant}/{site}/L{layer}/probe.json",
    params:
        saes=layer_sae_args,
        family=model_family,
        cfg=as_json(probe_job_config(STUDY["probe"])),
        code=code_version("probe"),
    threads: STUDY["sae_threads"]
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/probe/{model}/{dataset}/{variant}/{site}/L{layer}.log",
    benchmark:
        "results/benchmarks/probe/{model}/{dataset}/{variant}/{site}/L{layer}.tsv"
    shell:
        "python -m workflow probe"
        " --train-acts $(dirname {input.train_acts})/{wildcards.site}/L{wildcards.layer}"
        " --test-acts $(dirname {input.test_acts})/{wildcards.site}/L{wildcards.layer}"
        " --train-tokens {input.train_tokens} --test-tokens {input.test_tokens} --meta {input.meta}"
        " --family {params.family} {params.saes} --config {params.cfg:q}"
        " --out-dir $(dirname {output.summary}) > {log} 2>&1"


rule cluster:
    input:
        acts=expand("results/activations/{{model}}/{variant}/{{dataset}}/test/extract.json", variant=VARIANTS),
        tokens="results/tokens/{model}/{dataset}/test.parquet",
        data="results/data/{dataset}/test.parquet",
        meta="results/data/{dataset}/meta.json",
        features=lambda w: [
            f"{folder}/features.parquet"
            for entry in cluster_plan(w.model, w.dataset).values()
            for folder in entry["saes"].values()
        ],
    output:
        clusters="results/analysis/{model}/{dataset}/clusters/clusters.parquet",
        scores="results/analysis/{model}/{dataset}/clusters/scores.parquet",
        plot="results/analysis/{model}/{dataset}/clusters/clusters.png",
        summary="results/analysis/{model}/{dataset}/clusters/cluster.json",
    params:
        plan=lambda w: as_json(cluster_plan(w.model, w.dataset)),
        family=model_family,
        title="{model} on {dataset}",
        cfg=as_json(STUDY["cluster"]),
        code=code_version("cluster"),
    threads: STUDY["sae_threads"]
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/cluster/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/cluster/{model}/{dataset}.tsv"
    shell:
        "python -m workflow cluster --plan {params.plan:q} --tokens {input.tokens} --data {input.data}"
        " --meta {input.meta} --family {params.family} --config {params.cfg:q} --title {params.title:q}"
        " --out-dir $(dirname {output.summary}) > {log} 2>&1"


rule probe_summary:
    input:
        probes=lambda w: [f"{d}/probe.json" for d in probe_dirs(w.model, w.dataset)],
    output:
        tables=expand(
            "results/analysis/{{model}}/{{dataset}}/probe_summary/{name}.parquet",
            name=["probes", "sparse", "ranked", "tokens"],
        ),
        plots=expand(
            "results/analysis/{{model}}/{{dataset}}/probe_summary/{name}.png",
            name=["probe_accuracy", "sparse"],
        ),
    params:
        title="{model} on {dataset}",
        code=code_version("probe_summary"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/probe_summary/{model}/{dataset}.log",
    shell:
        "python -m workflow probe_summary"
        " --probes $(for f in {input.probes}; do dirname $f; done)"
        " --title {params.title:q} --out-dir $(dirname {output.tables[0]}) > {log} 2>&1"
