report_index_job = stage_job("report_index")


rule report_index:
    input:
        pages=PLAN.report_pages(),
    output:
        layout.REPORT_INDEX.pattern("page"),
    params:
        notes=" ".join(shlex.quote(n) for n in PLAN.unstudied()),
        code=code_version("report_index"),
    conda:
        report_index_job.env
    log:
        report_index_job.log,
    benchmark:
        report_index_job.benchmark
    shell:
        report_index_job.shell(
            "--pages {input.pages} --out {output} --not-studied {params.notes}"
        )
