# One offline report folder per (model, dataset): its inputs are exactly the files it shows.


rule report:
    input:
        unpack(lambda w: PLAN.report_inputs(w.model, w.dataset)),
    output:
        directory(layout.REPORT.pattern()),
    params:
        args=lambda w: shlex.join(PLAN.report_args(w.model, w.dataset)),
        code=code_version("report"),
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("report", "{model}/{dataset}"),
    benchmark:
        layout.benchmark("report", "{model}/{dataset}")
    shell:
        "python -m workflow report --model {wildcards.model} --dataset {wildcards.dataset} {params.args}"
        " --out-dir {output} > {log} 2>&1"
