# The attention heads of one (model, dataset), pretrained against fine-tuned.


heads_summary_job = stage_job("heads_summary", "{model}/{dataset}")


rule heads_summary:
    input:
        **{v: layout.HEADS.pattern("summary", variant=v) for v in VARIANTS},
    output:
        **files(layout.HEADS_SUMMARY, *layout.HEADS_SUMMARY.names),
    params:
        pretrained=parent("pretrained"),
        finetuned=parent("finetuned"),
        examples=STUDY["heads"]["n_examples"],
        title="{model} on {dataset}",
        out=layout.HEADS_SUMMARY.pattern(),
        code=code_version("heads_summary"),
    conda:
        heads_summary_job.env
    log:
        heads_summary_job.log,
    benchmark:
        heads_summary_job.benchmark
    shell:
        heads_summary_job.shell(
            "--pretrained {params.pretrained} --finetuned {params.finetuned} --examples "
            "{params.examples} --title {params.title:q} --out-dir {params.out}"
        )
