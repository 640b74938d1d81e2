# One job per (model, variant, dataset, split) writes every configured
# (site, layer) set under .../{split}/{site}/L{layer}/ (each renamed into place
# when complete); extract.json, written last, marks the job done.


extract_job = stage_job("extract", "{model}/{variant}/{dataset}/{split}")


rule extract:
    input:
        tokens=layout.TOKENS.pattern("table"),
        model=variant_weights,
    output:
        layout.ACTIVATIONS.pattern("summary"),
    params:
        source=lambda w: PLAN.variant_source(w.model, w.variant, w.dataset),
        targets=lambda w: " ".join(PLAN.extract_targets(w.model)),
        meta=lambda w: as_json({"model": w.model, "variant": w.variant, "dataset": w.dataset, "split": w.split}),
        cfg=as_json(PLAN.extract_config()),
        out=layout.ACTIVATIONS.pattern(),
        load=load_arg,
        code=code_version("extract"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        extract_job.env
    log:
        extract_job.log,
    benchmark:
        extract_job.benchmark
    shell:
        extract_job.shell(
            "--model {params.source:q} --tokens {input.tokens} --targets {params.targets} --meta "
            "{params.meta:q} --config {params.cfg:q} --out-root {params.out} --summary {output} --load "
            "{params.load:q}"
        )
