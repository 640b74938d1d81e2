# The fine-tuned variant, where the workflow makes it: classify (sequence classification),
# causal_lm or masked_lm (full or LoRA, merged). A checkpoint kind has no job here.


finetune_job = stage_job("finetune", "{model}/{kind}/{dataset}")


rule finetune:
    input:
        train=layout.TOKENS.pattern("table", split="train"),
        test=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
        data=layout.DATA.pattern("split", split="train"),
        model=lambda w: PLAN.model_inputs(w.model),
    output:
        **files(layout.FINETUNED, "metrics", "weights"),
    params:
        source=lambda w: PLAN.model(w.model)["source"],
        cfg=lambda w: as_json(PLAN.finetune_config(w.model)),
        out=layout.FINETUNED.pattern(),
        load=load_arg,
        code=code_version("finetune"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        finetune_job.env
    log:
        finetune_job.log,
    benchmark:
        finetune_job.benchmark
    shell:
        finetune_job.shell(
            "--model {params.source:q} --train-tokens {input.train} --test-tokens {input.test} --meta "
            "{input.meta} --data {input.data} --config {params.cfg:q} --out-dir {params.out} --load "
            "{params.load:q}"
        )
