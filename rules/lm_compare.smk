# Where the two variants' language models disagree: per-token KL and losses on the test split,
# for models whose base carries an LM head.


lm_compare_job = stage_job("lm_compare", "{model}/{dataset}")


rule lm_compare:
    input:
        tokens=layout.TOKENS.pattern("table", split="test"),
        model=lambda w: PLAN.variant_inputs(w.model, "finetuned", w.dataset),
    output:
        **files(layout.LM_COMPARE, "tokens", "documents", "summary", "plot"),
    params:
        args=lambda w: " ".join(PLAN.lm_compare_args(w.model, w.dataset)),
        cfg=as_json(PLAN.section("lm_compare")),
        out=layout.LM_COMPARE.pattern(),
        load=load_arg,
        code=code_version("lm_compare"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        lm_compare_job.env
    log:
        lm_compare_job.log,
    benchmark:
        lm_compare_job.benchmark
    shell:
        lm_compare_job.shell(
            "{params.args} --tokens {input.tokens} --config {params.cfg:q} --out-dir {params.out} "
            "--title '{wildcards.model} on {wildcards.dataset}' --load {params.load:q}"
        )
