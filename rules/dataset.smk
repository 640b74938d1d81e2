rule dataset:
    input:
        lambda w: PLAN.local_files(w.dataset),
    output:
        **files(layout.DATA, "train", "test", "meta"),
    params:
        spec=lambda w: as_json(STUDY["datasets"][w.dataset]),
        out=layout.DATA.pattern(),
        code=code_version("dataset"),
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("dataset", "{dataset}"),
    benchmark:
        layout.benchmark("dataset", "{dataset}")
    shell:
        "python -m workflow dataset --name {wildcards.dataset} --spec {params.spec:q} --out-dir {params.out} > {log} 2>&1"
