# Pretrained vs fine-tuned SAE of one (site, layer, recipe), then every layer of a recipe.


rule diff:
    input:
        pretrained_features=sae_folder_pattern().replace("{variant}", "pretrained") + "/features.parquet",
        finetuned_features=sae_folder_pattern().replace("{variant}", "finetuned") + "/features.parquet",
        pretrained_acts="results/activations/{model}/pretrained/{dataset}/test/extract.json",
        finetuned_acts="results/activations/{model}/finetuned/{dataset}/test/extract.json",
        tokens="results/tokens/{model}/{dataset}/test.parquet",
        pretrained_classifier="results/heads/{model}/{dataset}/model.safetensors",
        finetuned_classifier="results/models/{model}/{dataset}/model.safetensors",
    output:
        table=diff_folder_pattern() + "/diff.parquet",
        transfer=diff_folder_pattern() + "/transfer.parquet",
        changed=diff_folder_pattern() + "/changed.parquet",
        summary=diff_folder_pattern() + "/diff.json",
    params:
        lm=lambda w: " ".join(f"--{v}-lm {sae_lm(w.model, v, w.dataset)}" for v in VARIANTS if sae_lm(w.model, v, w.dataset)),
        cfg=as_json(STUDY["diff"]),
        eval_cfg=as_json(STUDY["sae_eval"]),
        code=code_version("diff"),
    threads: STUDY["sae_threads"]
    resources:
        gpu=1,
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/diff/{model}/{dataset}/{site}/L{layer}/{sae}.log",
    benchmark:
        "results/benchmarks/diff/{model}/{dataset}/{site}/L{layer}/{sae}.tsv"
    shell:
        "python -m workflow diff"
        " --pretrained-sae $(dirname {input.pretrained_features}) --finetuned-sae $(dirname {input.finetuned_features})"
        " --pretrained-acts $(dirname {input.pretrained_acts})/{wildcards.site}/L{wildcards.layer}"
        " --finetuned-acts $(dirname {input.finetuned_acts})/{wildcards.site}/L{wildcards.layer}"
        " --pretrained-classifier $(dirname {input.pretrained_classifier})"
        " --finetuned-classifier $(dirname {input.finetuned_classifier}) {params.lm}"
        " --tokens {input.tokens} --config {params.cfg:q} --eval-config {params.eval_cfg:q}"
        " --out-dir $(dirname {output.summary}) > {log} 2>&1"


rule diff_summary:
    input:
        lambda w: diff_summaries(w.model, w.dataset, w.sae),
    output:
        categories="results/analysis/{model}/{dataset}/diff/{sae}/categories.parquet",
        transfer="results/analysis/{model}/{dataset}/diff/{sae}/transfer.parquet",
        plots=expand("results/analysis/{{model}}/{{dataset}}/diff/{{sae}}/{name}.png", name=["categories", "transfer", "decoder_cosine"]),
    params:
        title="{model} on {dataset}, recipe {sae}",
        code=code_version("diff_summary"),
    conda:
        "../envs/workflow.yaml"
    log:
        "logs/diff_summary/{model}/{dataset}/{sae}.log",
    shell:
        "python -m workflow diff_summary --diffs $(for f in {input}; do dirname $f; done)"
        " --title {params.title:q} --out-dir $(dirname {output.categories}) > {log} 2>&1"
