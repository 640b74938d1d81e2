# A model of source scratch trained on its corpus, with log-spaced snapshots: its final folder is
# the pretrained variant of every later stage.


pretrain_job = stage_job("pretrain", "{model}")


rule pretrain:
    input:
        init=layout.SCRATCH_INIT.pattern("weights"),
        train=lambda w: layout.TOKENS.file("table", model=w.model, dataset=PLAN.corpus(w.model), split="train"),
        test=lambda w: layout.TOKENS.file("table", model=w.model, dataset=PLAN.corpus(w.model), split="test"),
    output:
        **files(layout.SCRATCH, "weights", "metrics"),
    params:
        init=parent("init"),
        cfg=lambda w: as_json(PLAN.pretrain_config(w.model)),
        board_dim=lambda w: PLAN.model(w.model)["board_dim"],
        out=layout.SCRATCH.pattern(),
        code=code_version("pretrain"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        pretrain_job.env
    log:
        pretrain_job.log,
    benchmark:
        pretrain_job.benchmark
    shell:
        pretrain_job.shell(
            "--init {params.init} --train-tokens {input.train} --test-tokens {input.test} --board-dim "
            "{params.board_dim} --config {params.cfg:q} --out-dir {params.out}"
        )
