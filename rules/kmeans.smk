# K-means per (model, dataset): one job covers every (variant, site, layer) in the
# `probe` scope, raw activations and each SAE's latents.


kmeans_job = stage_job("kmeans", "{model}/{dataset}")


rule kmeans:
    input:
        acts=expand(layout.ACTIVATIONS.pattern("summary", split="test"), variant=VARIANTS, allow_missing=True),
        tokens=layout.TOKENS.pattern("table", split="test"),
        data=layout.DATA.pattern("test"),
        meta=layout.DATA.pattern("meta"),
        features=lambda w: layout.SAE.inside(
            [folder for entry in PLAN.kmeans_plan(w.model, w.dataset) for folder in entry["saes"].values()], "features"
        ),
    output:
        **files(layout.KMEANS, "clusters", "scores", "plot", "summary"),
    params:
        plan=lambda w: as_json(PLAN.kmeans_plan(w.model, w.dataset)),
        family=lambda w: PLAN.family(w.model),
        title="{model} on {dataset}",
        cfg=as_json(PLAN.section("kmeans")),
        out=layout.KMEANS.pattern(),
        code=code_version("kmeans"),
    threads: STUDY["sae_threads"]
    conda:
        kmeans_job.env
    log:
        kmeans_job.log,
    benchmark:
        kmeans_job.benchmark
    shell:
        kmeans_job.shell(
            "--plan {params.plan:q} --tokens {input.tokens} --data {input.data} --meta {input.meta} "
            "--family {params.family} --config {params.cfg:q} --title {params.title:q} --out-dir "
            "{params.out}"
        )
