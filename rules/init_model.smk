# The untrained model and tokenizer of a model of source scratch (its tokenizer reads every tokens table).


init_model_job = stage_job("init_model", "{model}")


rule init_model:
    output:
        **files(layout.SCRATCH_INIT, "weights", "config"),
    params:
        spec=lambda w: as_json(PLAN.init_spec(w.model)),
        vocab=lambda w: as_json(PLAN.model(w.model)["scratch_vocab"]),
        cells=lambda w: PLAN.model(w.model)["board_dim"] ** 2,
        out=layout.SCRATCH_INIT.pattern(),
        code=code_version("init_model"),
    conda:
        init_model_job.env
    log:
        init_model_job.log,
    benchmark:
        init_model_job.benchmark
    shell:
        init_model_job.shell(
            "--spec {params.spec:q} --vocab {params.vocab:q} --board-cells {params.cells} --out-dir "
            "{params.out}"
        )
