# Every diffing method scored against the known change of a boards corpus, per diffed (site, layer, recipe).


ground_truth_job = stage_job("ground_truth", "{model}/{dataset}/{site}/L{layer}/{sae}")


rule ground_truth:
    input:
        meta=layout.DATA.pattern("meta"),
        diff=layout.DIFF.pattern("table"),
        pre=layout.SAE.pattern("features", variant="pretrained"),
        ft=layout.SAE.pattern("features", variant="finetuned"),
        stagewise=lambda w: [
            f"{d}/{layout.STAGEWISE.names['movement']}"
            for d in [PLAN.stagewise_dir(w.model, w.dataset, w.site, int(w.layer), w.sae)]
            if d
        ],
        crosscoders=lambda w: layout.CROSSCODER.inside(
            PLAN.layer_crosscoders(w.model, w.dataset, w.site, int(w.layer)).values(), "latents", "features"
        ),
    output:
        **files(layout.TRUTH, "table", "summary"),
    params:
        diff=parent("diff"),
        pre=parent("pre"),
        ft=parent("ft"),
        args=lambda w: " ".join(PLAN.truth_args(w.model, w.dataset, w.site, int(w.layer), w.sae)),
        min_f1=STUDY["ground_truth"]["min_f1"],
        out=layout.TRUTH.pattern(),
        code=code_version("ground_truth"),
    conda:
        ground_truth_job.env
    log:
        ground_truth_job.log,
    benchmark:
        ground_truth_job.benchmark
    shell:
        ground_truth_job.shell(
            "--meta {input.meta} --diff {params.diff} --sae-pretrained {params.pre} --sae-finetuned "
            "{params.ft} {params.args} --min-f1 {params.min_f1} --out {params.out}"
        )
