# Stage-wise fine-tuning of each diffed pretrained SAE on the fine-tuned variant's activations.


stagewise_job = stage_job("stagewise", "{model}/{dataset}/{site}/L{layer}/{sae}")


rule stagewise:
    input:
        sae=layout.SAE.pattern("weights", variant="pretrained"),
        train=layout.ACTIVATIONS.pattern("summary", variant="finetuned", split="train"),
        test=expand(layout.ACTIVATIONS.pattern("summary", split="test"), variant=VARIANTS, allow_missing=True),
    output:
        **files(layout.STAGEWISE, "weights", "cfg", "training_log", "movement", "summary"),
    params:
        sae=parent("sae"),
        train=layout.ACTIVATION_SET.pattern(variant="finetuned", split="train"),
        pre=layout.ACTIVATION_SET.pattern(variant="pretrained", split="test"),
        ft=layout.ACTIVATION_SET.pattern(variant="finetuned", split="test"),
        cfg=as_json(PLAN.stagewise_config()),
        out=layout.STAGEWISE.pattern(),
        code=lambda w: code_version("stagewise", PLAN.sae_recipe(w.sae)["architecture"]),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        stagewise_job.env
    log:
        stagewise_job.log,
    benchmark:
        stagewise_job.benchmark
    shell:
        stagewise_job.shell(
            "--sae {params.sae} --train-acts {params.train} --pretrained-test {params.pre} "
            "--finetuned-test {params.ft} --config {params.cfg:q} --out {params.out}"
        )
