# One job per (model, variant, dataset, split) writes every configured
# (site, layer) set under .../{split}/{site}/L{layer}/ (each renamed into place
# when complete); extract.json, written last, marks the job done.


rule extract:
    input:
        tokens="results/tokens/{model}/{dataset}/{split}.parquet",
        model=variant_inputs,
    output:
        "results/activations/{model}/{variant}/{dataset}/{split}/extract.json",
    params:
        source=variant_source,
        targets=lambda w: " ".join(extract_targets(w.model)),
        meta=lambda w: as_json({"model": w.model, "variant": w.variant, "dataset": w.dataset, "split": w.split}),
        cfg=as_json({k: v for k, v in STUDY["extract"].items() if k != "splits"}),
        code=code_version("extract"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/extract/{model}/{variant}/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/extract/{model}/{variant}/{dataset}/{split}.tsv"
    shell:
        "python -m workflow extract --model {params.source:q} --tokens {input.tokens}"
        " --targets {params.targets} --meta {params.meta:q} --config {params.cfg:q}"
        " --out-root $(dirname {output}) --summary {output} > {log} 2>&1"
