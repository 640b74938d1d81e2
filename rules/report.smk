# One offline report folder per (model, dataset): its inputs are exactly the files it shows.


job = stage_job("report", "{model}/{dataset}")


rule report:
    input:
        unpack(lambda w: PLAN.report_inputs(w.model, w.dataset)),
    output:
        directory(layout.REPORT.pattern()),
    params:
        args=lambda w: shlex.join(PLAN.report_args(w.model, w.dataset)),
        code=code_version("report"),
    conda:
        job.env
    log:
        job.log,
    benchmark:
        job.benchmark
    shell:
        job.shell(
            "--model {wildcards.model} --dataset {wildcards.dataset} {params.args} --out-dir {output}"
        )
