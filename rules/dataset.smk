dataset_job = stage_job("dataset", "{dataset}")


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
        dataset_job.env
    log:
        dataset_job.log,
    benchmark:
        dataset_job.benchmark
    shell:
        dataset_job.shell(
            "--name {wildcards.dataset} --spec {params.spec:q} --out-dir {params.out}"
        )
