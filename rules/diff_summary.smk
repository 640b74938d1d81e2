# One recipe's diffs across every (site, layer) of a (model, dataset).


diff_summary_job = stage_job("diff_summary", "{model}/{dataset}/{sae}")


rule diff_summary:
    input:
        lambda w: layout.DIFF.inside(PLAN.diff_dirs(w.model, w.dataset, w.sae), "summary"),
    output:
        **files(layout.DIFF_SUMMARY, "categories", "transfer", "categories_plot", "transfer_plot", "cosine_plot"),
    params:
        diffs=lambda w: " ".join(PLAN.diff_dirs(w.model, w.dataset, w.sae)),
        title="{model} on {dataset}, recipe {sae}",
        out=layout.DIFF_SUMMARY.pattern(),
        code=code_version("diff_summary"),
    conda:
        diff_summary_job.env
    log:
        diff_summary_job.log,
    benchmark:
        diff_summary_job.benchmark
    shell:
        diff_summary_job.shell(
            "--diffs {params.diffs} --title {params.title:q} --out-dir {params.out}"
        )
