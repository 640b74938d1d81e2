# One offline report folder per (model, dataset): its inputs are exactly the files it shows.


report_job = stage_job("report", "{model}/{dataset}")


rule report:
    input:
        unpack(lambda w: PLAN.report_inputs(w.model, w.dataset)),
    output:
        directory(layout.REPORT.pattern()),
    params:
        args=lambda w: shlex.join(PLAN.report_args(w.model, w.dataset)),
        code=code_version("report"),
    conda:
        report_job.env
    log:
        report_job.log,
    benchmark:
        report_job.benchmark
    shell:
        report_job.shell(
            "--model {wildcards.model} --dataset {wildcards.dataset} {params.args} --out-dir {output}"
        )
