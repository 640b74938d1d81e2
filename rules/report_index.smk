job = stage_job("report_index")


rule report_index:
    input:
        pages=PLAN.report_pages(),
    output:
        layout.REPORT_INDEX.pattern("page"),
    params:
        notes=" ".join(shlex.quote(n) for n in PLAN.unstudied()),
        code=code_version("report_index"),
    conda:
        job.env
    log:
        job.log,
    benchmark:
        job.benchmark
    shell:
        job.shell(
            "--pages {input.pages} --out {output} --not-studied {params.notes}"
        )
