tokens_job = stage_job("tokens", "{model}/{dataset}/{split}")


rule tokens:
    input:
        data=layout.DATA.pattern("split"),
        tokenizer=lambda w: PLAN.tokenizer_inputs(w.model),
    output:
        table=layout.TOKENS.pattern("table"),
        truncation=layout.TOKENS.pattern("truncation"),
    params:
        source=lambda w: PLAN.tokenizer_source(w.model),
        max_length=lambda w: PLAN.model(w.model)["max_length"],
        chat=lambda w: f"--chat {shlex.quote(PLAN.chat_source(w.model))}" if PLAN.chat_source(w.model) else "",
        stride=lambda w: "" if STUDY["tokenize"]["stride"] is None else f"--stride {STUDY['tokenize']['stride']}",
        code=code_version("tokens"),
    conda:
        tokens_job.env
    log:
        tokens_job.log,
    benchmark:
        tokens_job.benchmark
    shell:
        tokens_job.shell(
            "--data {input.data} --model {params.source:q} --max-length {params.max_length} "
            "{params.chat} --out {output.table} --truncation {output.truncation} {params.stride}"
        )
