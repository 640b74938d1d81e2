probe_summary_job = stage_job("probe_summary", "{model}/{dataset}")


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
        probe_summary_job.env
    log:
        probe_summary_job.log,
    benchmark:
        probe_summary_job.benchmark
    shell:
        probe_summary_job.shell(
            "--probes {params.probes} --title {params.title:q} --out-dir {params.out}"
        )
