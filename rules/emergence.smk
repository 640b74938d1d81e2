# When and where each known abstraction forms in a scratch model: probes, CKA and SAE alignment over
# its training snapshots, on its corpus.


emergence_job = stage_job("emergence", "{model}/{dataset}")


rule emergence:
    input:
        trained=layout.SCRATCH.pattern("metrics"),
        init=layout.SCRATCH_INIT.pattern("weights"),
        train=layout.TOKENS.pattern("table", split="train"),
        test=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
        saes=lambda w: [f"{d}/{layout.SAE.names['cfg']}" for d in PLAN.emergence_saes(w.model).values()],
    output:
        **files(layout.EMERGENCE, "table", "cka", "sae", "summary", "plot"),
    params:
        init=parent("init"),
        trained=parent("trained"),
        targets=lambda w: " ".join(PLAN.extract_targets(w.model)),
        saes=lambda w: " ".join(f"{k}={v}" for k, v in PLAN.emergence_saes(w.model).items()),
        cfg=as_json(PLAN.section("emergence")),
        out=layout.EMERGENCE.pattern(),
        code=code_version("emergence"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        emergence_job.env
    log:
        emergence_job.log,
    benchmark:
        emergence_job.benchmark
    shell:
        emergence_job.shell(
            "--init {params.init} --trained {params.trained} --train-tokens {input.train} --test-tokens "
            "{input.test} --meta {input.meta} --targets {params.targets} --saes {params.saes} --config "
            "{params.cfg:q} --out-dir {params.out}"
        )
