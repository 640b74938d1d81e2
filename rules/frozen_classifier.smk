# A variant's body with a classifier fitted on its frozen features: the task model of the
# pretrained variant (and of a fine-tuned one not made by classification), on which SAE
# splices and head ablations are scored.


frozen_classifier_job = stage_job("frozen_classifier", "{model}/{variant}/{dataset}")


rule frozen_classifier:
    input:
        train=layout.TOKENS.pattern("table", split="train"),
        test=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
        model=variant_weights,
    output:
        **files(layout.FROZEN, "metrics", "weights"),
    params:
        source=lambda w: PLAN.variant_source(w.model, w.variant, w.dataset),
        cfg=lambda w: as_json(PLAN.frozen_config(w.model)),
        out=layout.FROZEN.pattern(),
        load=load_arg,
        code=code_version("frozen_classifier"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        frozen_classifier_job.env
    log:
        frozen_classifier_job.log,
    benchmark:
        frozen_classifier_job.benchmark
    shell:
        frozen_classifier_job.shell(
            "--model {params.source:q} --train-tokens {input.train} --test-tokens {input.test} --meta "
            "{input.meta} --config {params.cfg:q} --out-dir {params.out} --load {params.load:q}"
        )
