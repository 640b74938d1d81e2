rule evaluate_sae:
    input:
        **files(layout.SAE, "weights", "cfg"),
        acts=layout.ACTIVATIONS.pattern("summary", split="test"),
        tokens=layout.TOKENS.pattern("table", split="test"),
        classifier=classifier_weights,
        lm=variant_weights,
    output:
        **files(layout.SAE, "eval", "sparsity"),
    params:
        sae=parent("cfg"),
        acts=layout.ACTIVATION_SET.pattern(split="test"),
        classifier=classifier_arg,
        lm=lm_arg,
        cfg=as_json(PLAN.section("sae_eval")),
        load=load_arg,
        code=code_version("evaluate_sae"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        layout.log("evaluate_sae", "{model}/{variant}/{dataset}/{site}/L{layer}/{sae}"),
    benchmark:
        layout.benchmark("evaluate_sae", "{model}/{variant}/{dataset}/{site}/L{layer}/{sae}")
    shell:
        "python -m workflow evaluate_sae --sae {params.sae} --acts {params.acts} --tokens {input.tokens}"
        " {params.classifier} {params.lm} --config {params.cfg:q} --load {params.load:q} > {log} 2>&1"
