# Sparse autoencoders: one per (model, variant, dataset, site, layer, recipe).
# Each job gets only its own recipe (and its architecture's code version) as
# params, so editing one recipe re-runs that recipe's SAEs and their dependants.


rule linear_head:
    input:
        train="results/tokens/{model}/{dataset}/train.parquet",
        test="results/tokens/{model}/{dataset}/test.parquet",
        meta="results/data/{dataset}/meta.json",
    output:
        metrics="results/heads/{model}/{dataset}/metrics.json",
        weights="results/heads/{model}/{dataset}/model.safetensors",
    params:
        source=lambda w: model_spec(w.model)["source"],
        cfg=lambda w: as_json({k: model_spec(w.model)["finetune"][k] for k in ("seed", "max_train_docs", "eval_batch_size")}),
        code=code_version("linear_head"),
    threads: STUDY["threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/linear_head/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/linear_head/{model}/{dataset}.tsv"
    shell:
        "python -m workflow linear_head --model {params.source:q} --train-tokens {input.train}"
        " --test-tokens {input.test} --meta {input.meta} --config {params.cfg:q}"
        " --out-dir $(dirname {output.metrics}) > {log} 2>&1"


rule train_sae:
    input:
        "results/activations/{model}/{variant}/{dataset}/train/extract.json",
    output:
        weights=sae_folder_pattern() + "/sae_weights.safetensors",
        cfg=sae_folder_pattern() + "/cfg.json",
        log_table=sae_folder_pattern() + "/training_log.parquet",
    params:
        acts="results/activations/{model}/{variant}/{dataset}/train/{site}/L{layer}",
        recipe=lambda w: as_json(sae_recipe(w)),
        code=lambda w: code_version("train_sae", sae_recipe(w)["architecture"]),
        source=lambda w: model_spec(w.model)["source"],
        max_length=lambda w: model_spec(w.model)["max_length"],
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/train_sae/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/train_sae/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}.tsv"
    shell:
        "python -m workflow train_sae --acts {params.acts} --recipe {params.recipe:q} --name {wildcards.sae}"
        " --source {params.source:q} --max-length {params.max_length} --out $(dirname {output.cfg}) > {log} 2>&1"


rule evaluate_sae:
    input:
        weights=rules.train_sae.output.weights,
        cfg=rules.train_sae.output.cfg,
        acts="results/activations/{model}/{variant}/{dataset}/test/extract.json",
        tokens="results/tokens/{model}/{dataset}/test.parquet",
        classifier=variant_classifier,
        lm=variant_inputs,
    output:
        eval=sae_folder_pattern() + "/eval.json",
        sparsity=sae_folder_pattern() + "/sparsity.safetensors",
    params:
        acts="results/activations/{model}/{variant}/{dataset}/test/{site}/L{layer}",
        lm=lambda w: f"--lm {variant_lm(w)}" if variant_lm(w) else "",
        cfg=as_json(STUDY["sae_eval"]),
        code=code_version("evaluate_sae"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/evaluate_sae/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/evaluate_sae/{model}/{variant}/{dataset}/{site}/L{layer}/{sae}.tsv"
    shell:
        "python -m workflow evaluate_sae --sae $(dirname {output.eval}) --acts {params.acts}"
        " --tokens {input.tokens} --classifier $(dirname {input.classifier}) {params.lm}"
        " --config {params.cfg:q} > {log} 2>&1"
