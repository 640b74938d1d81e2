rule report_index:
    input:
        pages=PLAN.report_pages(),
    output:
        layout.REPORT_INDEX.pattern("page"),
    params:
        notes=" ".join(shlex.quote(n) for n in PLAN.unstudied()),
        code=code_version("report_index"),
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("report_index"),
    benchmark:
        layout.benchmark("report_index")
    shell:
        "python -m workflow report_index --pages {input.pages} --out {output} --not-studied {params.notes} > {log} 2>&1"
