rule probe_summary:
    input:
        lambda w: layout.PROBE.inside(PLAN.probe_dirs(w.model, w.dataset), "summary"),
    output:
        **files(layout.PROBE_SUMMARY, *layout.PROBE_SUMMARY.names),
    params:
        probes=lambda w: " ".join(PLAN.probe_dirs(w.model, w.dataset)),
        title="{model} on {dataset}",
        out=layout.PROBE_SUMMARY.pattern(),
        code=code_version("probe_summary"),
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("probe_summary", "{model}/{dataset}"),
    benchmark:
        layout.benchmark("probe_summary", "{model}/{dataset}")
    shell:
        "python -m workflow probe_summary --probes {params.probes} --title {params.title:q} --out-dir {params.out}"
        " > {log} 2>&1"
