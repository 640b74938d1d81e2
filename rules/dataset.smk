job = stage_job("dataset", "{dataset}")


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
        job.env
    log:
        job.log,
    benchmark:
        job.benchmark
    shell:
        job.shell(
            "--name {wildcards.dataset} --spec {params.spec:q} --out-dir {params.out}"
        )
