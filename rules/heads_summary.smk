# The attention heads of one (model, dataset), pretrained against fine-tuned.


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
        "../envs/workflow.yaml"
    log:
        layout.log("heads_summary", "{model}/{dataset}"),
    benchmark:
        layout.benchmark("heads_summary", "{model}/{dataset}")
    shell:
        "python -m workflow heads_summary --pretrained {params.pretrained} --finetuned {params.finetuned}"
        " --examples {params.examples} --title {params.title:q} --out-dir {params.out} > {log} 2>&1"
