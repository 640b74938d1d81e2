# Probes per (model, variant, dataset, site, layer) in the `probe` scope. The scope keys
# are not passed to jobs: widening the scope adds probe jobs and re-runs only the
# per-(model, dataset) jobs that gather them.


probe_job = stage_job("probe", "{model}/{dataset}/{variant}/{site}/L{layer}")


rule probe:
    input:
        train_acts=layout.ACTIVATIONS.pattern("summary", split="train"),
        test_acts=layout.ACTIVATIONS.pattern("summary", split="test"),
        train_tokens=layout.TOKENS.pattern("table", split="train"),
        test_tokens=layout.TOKENS.pattern("table", split="test"),
        meta=layout.DATA.pattern("meta"),
        features=lambda w: layout.SAE.inside(layer_saes(w).values(), "features"),
    output:
        **files(layout.PROBE, "sequence", "sparse", "ranked", "tokens", "summary"),
    params:
        train_acts=layout.ACTIVATION_SET.pattern(split="train"),
        test_acts=layout.ACTIVATION_SET.pattern(split="test"),
        saes=lambda w: " ".join(f"--sae {name}={folder}" for name, folder in layer_saes(w).items()),
        family=lambda w: PLAN.family(w.model),
        cfg=as_json(PLAN.probe_config()),
        out=layout.PROBE.pattern(),
        code=code_version("probe"),
    threads: STUDY["sae_threads"]
    conda:
        probe_job.env
    log:
        probe_job.log,
    benchmark:
        probe_job.benchmark
    shell:
        probe_job.shell(
            "--train-acts {params.train_acts} --test-acts {params.test_acts} --train-tokens "
            "{input.train_tokens} --test-tokens {input.test_tokens} --meta {input.meta} --family "
            "{params.family} {params.saes} --config {params.cfg:q} --out-dir {params.out}"
        )
