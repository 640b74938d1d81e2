# The pretrained body with a classifier fitted on its frozen features: the pretrained
# variant's task model (SAE splices and head ablations are scored on it).


rule frozen_classifier:
    input:
        train=layout.TOKENS.pattern("table", split="train"),
        test=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
    output:
        **files(layout.FROZEN, "metrics", "weights"),
    params:
        source=lambda w: PLAN.model(w.model)["source"],
        cfg=lambda w: as_json(PLAN.frozen_config(w.model)),
        out=layout.FROZEN.pattern(),
        load=load_arg,
        code=code_version("frozen_classifier"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("frozen_classifier", "{model}/{dataset}"),
    benchmark:
        layout.benchmark("frozen_classifier", "{model}/{dataset}")
    shell:
        "python -m workflow frozen_classifier --model {params.source:q} --train-tokens {input.train}"
        " --test-tokens {input.test} --meta {input.meta} --config {params.cfg:q} --out-dir {params.out} --load {params.load:q} > {log} 2>&1"
