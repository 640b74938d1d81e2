# The diffing methods side by side at each diffed (site, layer, recipe).


methods_job = stage_job("methods", "{model}/{dataset}/{site}/L{layer}/{sae}")


rule methods:
    input:
        diff=layout.DIFF.pattern("table"),
        sae=layout.SAE.pattern("cfg", variant="pretrained"),
        stagewise=lambda w: [
            f"{d}/{layout.STAGEWISE.names['movement']}"
            for d in [PLAN.stagewise_dir(w.model, w.dataset, w.site, int(w.layer), w.sae)]
            if d
        ],
        crosscoders=lambda w: layout.CROSSCODER.inside(
            PLAN.layer_crosscoders(w.model, w.dataset, w.site, int(w.layer)).values(), "latents", "cfg"
        ),
    output:
        **files(layout.METHODS, "table", "summary"),
    params:
        diff=parent("diff"),
        sae=parent("sae"),
        args=lambda w: " ".join(PLAN.methods_args(w.model, w.dataset, w.site, int(w.layer), w.sae)),
        cfg=as_json(PLAN.section("diff")),
        out=layout.METHODS.pattern(),
        code=code_version("methods"),
    conda:
        methods_job.env
    log:
        methods_job.log,
    benchmark:
        methods_job.benchmark
    shell:
        methods_job.shell(
            "--diff {params.diff} --sae {params.sae} {params.args} --config {params.cfg:q} --out "
            "{params.out}"
        )
