"""The job plan as plain functions of the validated config: scopes, job slices, sources, gathering inputs,
targets. No Snakemake here; tests/test_workflow.py checks the same plan through the DAG."""

from __future__ import annotations

import shlex

import polars as pl
import pytest

from workflow import config, layout
from workflow.plan import Plan, as_json


@pytest.fixture(scope="module")
def plan(tiny_bert, tiny_gpt2, tmp_path_factory) -> Plan:
    folder = tmp_path_factory.mktemp("plan")
    words = ["good", "bad", "fine", "awful", "great", "poor", "nice", "dull", "superb", "weak"]
    pl.DataFrame({"text": words, "label": [1, 0] * 5}).write_csv(folder / "r.csv")
    study = config.load(
        {
            "models": {"bert": {"source": str(tiny_bert)}, "gpt2": {"source": str(tiny_gpt2), "layers": [2, 1]}},
            "datasets": {
                "news": {"source": "builtin", "task": "news_topic"},
                "reviews": {"source": "file", "path": str(folder / "r.csv")},
            },
            "layers": [2, 1],
            "sites": ["mlp_out", "resid_post"],
            "saes": {
                "topk": {
                    "architecture": "topk",
                    "k": 4,
                    "datasets": ["reviews"],
                    "layers": [2],
                    "sites": ["resid_post"],
                },
                "relu": {"architecture": "relu"},
            },
            "crosscoders": {"cc": {"k": 4, "layers": [2], "sites": ["resid_post"], "datasets": ["news"]}},
            "diff": {"seed_baseline": True, "seed_baseline_layers": [2]},
            "stagewise": {"enabled": True},
            "probe": {"datasets": ["reviews"], "layers": [2]},
            "heads": {"datasets": ["news"], "n_examples": 2},
        }
    )
    return Plan(study)


def test_scopes_filter_and_keep_a_canonical_order(plan):
    # layers ascending, sites in SITES order (resid_post, attn_out, mlp_out), whatever the config's order
    assert plan.stored("gpt2") == [("resid_post", 1), ("mlp_out", 1), ("resid_post", 2), ("mlp_out", 2)]
    assert plan.extract_targets("bert") == ["resid_post:1", "mlp_out:1", "resid_post:2", "mlp_out:2"]
    assert plan.sae_scope("bert", "reviews", "topk") == [("resid_post", 2)]
    assert plan.sae_scope("bert", "news", "topk") == []
    assert plan.sae_scope("bert", "news", "relu") == plan.stored("bert")  # no scope keys: everywhere
    assert plan.probe_scope("bert", "reviews") == [("resid_post", 2), ("mlp_out", 2)]
    assert plan.probe_scope("bert", "news") == []
    assert plan.heads_datasets() == ["news"]
    assert plan.recipes("bert", "reviews") == ["topk", "relu"] and plan.recipes("gpt2", "news") == ["relu"]
    assert plan.layer_saes("bert", "finetuned", "reviews", "resid_post", "2") == {
        "topk": "results/saes/bert/finetuned/reviews/resid_post/L2/topk",
        "relu": "results/saes/bert/finetuned/reviews/resid_post/L2/relu",
    }


def test_each_job_gets_only_its_slice(plan):
    topk = plan.sae_recipe("topk")
    assert topk["architecture"] == "topk" and topk["k"] == 4 and not {"datasets", "layers", "sites"} & set(topk)
    assert "l1_coefficient" not in topk and plan.sae_recipe("relu")["l1_coefficient"] == 5.0
    assert "n_examples" not in plan.heads_config() and "datasets" not in plan.heads_config()
    assert not {"datasets", "layers", "sites"} & set(plan.probe_config()) and "splits" not in plan.extract_config()
    assert set(plan.frozen_config("bert")) == {"seed", "max_train_docs", "eval_batch_size"}


def test_each_variant_has_its_sources(plan):
    assert plan.variant_source("bert", "finetuned", "news") == "results/models/bert/classify/news"
    assert plan.variant_source("bert", "pretrained", "news") == plan.model("bert")["source"]
    assert plan.classifier("bert", "pretrained", "news") == "results/frozen_classifiers/bert/pretrained/news"
    assert plan.classifier("gpt2", "finetuned", "news") == "results/models/gpt2/classify/news"
    assert plan.lm_spec("bert", "finetuned", "news") is None  # a BertModel checkpoint carries no MLM head
    source = plan.model("gpt2")["source"]
    assert plan.lm_spec("gpt2", "finetuned", "news") == {
        "source": source,
        "kind": "causal",
        "body": "results/models/gpt2/classify/news",
    }
    assert plan.lm_spec("gpt2", "pretrained", "news") == {"source": source, "kind": "causal", "body": None}
    assert plan.load_options("gpt2") == {"dtype": "float32", "device_map": None}


def test_gathering_jobs_read_what_their_scopes_cover(plan):
    assert plan.diff_dirs("bert", "reviews", "topk") == ["results/analysis/bert/reviews/resid_post/L2/topk"]
    assert len(plan.sae_dirs("bert", "reviews")) == 2 * (1 + 4)  # topk at one place, relu at four, two variants
    assert plan.probe_dirs("bert", "reviews")[0] == "results/analysis/bert/reviews/probes/pretrained/resid_post/L2"
    kmeans = plan.kmeans_plan("bert", "reviews")
    assert [e["acts"] for e in kmeans[:2]] == [
        "results/activations/bert/pretrained/reviews/test/resid_post/L2",
        "results/activations/bert/pretrained/reviews/test/mlp_out/L2",
    ]
    assert set(kmeans[0]["saes"]) == {"topk", "relu"} and set(kmeans[1]["saes"]) == {"relu"}


def test_the_diff_job_gets_both_variants_saes_sets_and_models(plan):
    args = plan.diff_args("gpt2", "news", "resid_post", 2, "relu")
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs == {
        "--pretrained-sae": "results/saes/gpt2/pretrained/news/resid_post/L2/relu",
        "--pretrained-acts": "results/activations/gpt2/pretrained/news/test/resid_post/L2",
        "--pretrained-classifier": "results/frozen_classifiers/gpt2/pretrained/news",
        "--pretrained-lm": shlex.quote(as_json(plan.lm_spec("gpt2", "pretrained", "news"))),
        "--finetuned-sae": "results/saes/gpt2/finetuned/news/resid_post/L2/relu",
        "--finetuned-acts": "results/activations/gpt2/finetuned/news/test/resid_post/L2",
        "--finetuned-classifier": "results/models/gpt2/classify/news",
        "--finetuned-lm": shlex.quote(as_json(plan.lm_spec("gpt2", "finetuned", "news"))),
        "--seed-sae": "results/seed_baselines/gpt2/news/resid_post/L2/relu",  # the noise floor
    }
    assert not any(a.endswith("-lm") for a in plan.diff_args("bert", "news", "resid_post", 2, "relu"))


def test_report_inputs_are_the_files_it_shows(plan):
    news, reviews = plan.report_inputs("bert", "news"), plan.report_inputs("bert", "reviews")
    assert news["probes"] == news["kmeans"] == [] and reviews["heads"] == []
    assert news["heads"][-1] == "results/analysis/bert/news/heads_summary/patterns.html"
    assert reviews["kmeans"] == [
        "results/analysis/bert/reviews/kmeans/scores.parquet",
        "results/analysis/bert/reviews/kmeans/clusters.parquet",
        "results/analysis/bert/reviews/kmeans/clusters.png",
    ]
    assert len(reviews["saes"]) == 5 * 10 and len(reviews["diffs"]) == 3 * 5
    assert reviews["frozen"] == ["results/frozen_classifiers/bert/pretrained/reviews/metrics.json"]
    args = plan.report_args("bert", "reviews")
    assert args[args.index("--diff-summaries") + 1 :][:2] == [
        "topk=results/analysis/bert/reviews/diff/topk",
        "relu=results/analysis/bert/reviews/diff/relu",
    ]
    assert "--heads-summary" not in args and "--kmeans" in args
    news_args = plan.report_args("gpt2", "news")
    assert "--heads-summary" in news_args and "--kmeans" not in news_args
    assert news_args[news_args.index("--diff-summaries") + 1] == "relu=results/analysis/gpt2/news/diff/relu"


def test_targets_cover_every_pair(plan):
    targets = plan.targets()
    assert targets[0] == layout.REPORT_INDEX.file("page")
    assert "results/analysis/gpt2/news/heads_summary/changes.parquet" in targets
    assert "results/analysis/gpt2/reviews/kmeans/kmeans.json" in targets
    assert "results/analysis/bert/news/kmeans/kmeans.json" not in targets
    assert sum(t.endswith("/eval.json") for t in targets) == sum(len(plan.sae_dirs(m, d)) for m, d in plan.pairs())
    assert len(plan.report_pages()) == 4


def test_the_diffing_methods_run_where_their_scopes_say(plan):
    # the seed baseline only at the layers it is asked for; its recipe is the recipe's, seed + 1
    assert (
        plan.seed_sae("gpt2", "news", "resid_post", 2, "relu") == "results/seed_baselines/gpt2/news/resid_post/L2/relu"
    )
    assert plan.seed_sae("gpt2", "news", "resid_post", 1, "relu") is None
    assert plan.seed_recipe("relu") == {**plan.sae_recipe("relu"), "seed": 1}
    assert plan.crosscoder_dirs("bert", "news") == ["results/crosscoders/bert/news/resid_post/L2/cc"]
    assert plan.crosscoder_dirs("bert", "reviews") == []
    assert plan.layer_crosscoders("bert", "news", "mlp_out", 2) == {}
    assert plan.methods_args("bert", "news", "resid_post", 2, "relu") == [
        "--stagewise",
        "results/analysis/bert/news/resid_post/L2/relu/stagewise",
        "--crosscoders",
        "cc=results/crosscoders/bert/news/resid_post/L2/cc",
    ]
    assert plan.methods_args("bert", "news", "mlp_out", 1, "relu") == [
        "--stagewise",
        "results/analysis/bert/news/mlp_out/L1/relu/stagewise",
    ]
    assert set(plan.stagewise_config()) >= {"steps", "match_cosine", "retained_cosine", "retained_correlation"}
    targets = plan.targets()
    assert "results/crosscoders/gpt2/news/resid_post/L2/cc/crosscoder.json" in targets
    assert "results/analysis/gpt2/news/mlp_out/L1/relu/methods/methods.json" in targets


@pytest.fixture(scope="module")
def scratch_plan(tiny_bert) -> Plan:
    board = {"board_dim": 6, "abs_n": 4, "abs_dim": 2, "abs_c": 4, "comp_n": 2, "comp_c": 2, "card_test": 2}
    study = config.load(
        {
            "models": {
                "net": {
                    "source": "scratch",
                    "scratch": {"family": "bert", "corpus": "boards", "layers": 2, "d_model": 32, "epochs": 2},
                },
                "bert": {"source": str(tiny_bert), "datasets": ["news"]},
            },
            "datasets": {
                "boards": {"source": "abstractions", "board": board, "n_train": 60, "n_test": 20},
                "changed": {"source": "abstractions", "board": board, "change": {"removed": [1], "new": 1}},
                "news": {"source": "builtin", "task": "news_topic"},
            },
            "layers": [1, 2],
            "saes": {"topk": {"architecture": "topk", "k": 4, "layers": [2]}},
        }
    )
    return Plan(study)


def test_a_scratch_model_trains_on_its_corpus_and_is_studied_on_the_changed_boards(scratch_plan):
    p = scratch_plan
    assert p.scratch("net") and not p.scratch("bert")
    # the corpus is studied by emergence, not fine-tuned on again; real text is not boards
    assert p.pairs() == [("net", "changed"), ("bert", "news")]
    assert p.model("net")["finetuned"]["kind"] == "masked_lm"  # an encoder's own objective
    assert p.model("net")["source"] == layout.SCRATCH.file("final", model="net")
    assert p.model_inputs("net") == [layout.SCRATCH.file("weights", model="net")]
    assert p.tokenizer_source("net") == layout.SCRATCH_INIT.path(model="net")
    assert p.tokenizer_source("bert") == p.model("bert")["source"] and p.tokenizer_inputs("bert") == []
    # the untrained model's slice is its shape; the training run's is the rest (no corpus, no shape)
    assert set(p.init_spec("net")["scratch"]) == set(p.SCRATCH_SHAPE)
    assert p.pretrain_config("net")["epochs"] == 2 and "corpus" not in p.pretrain_config("net")
    assert "d_model" not in p.pretrain_config("net") and p.pretrain_config("net")["positions"] == "learned"


def test_emergence_and_truth_jobs_and_the_report_pages_that_show_them(scratch_plan):
    p = scratch_plan
    assert p.emergence_pairs() == [("net", "boards")]
    assert p.emergence_saes("net") == {
        "topk:resid_post:2": layout.SAE.path(
            model="net", variant="pretrained", dataset="boards", site="resid_post", layer=2, sae="topk"
        )
    }
    truth = layout.TRUTH.path(model="net", dataset="changed", site="resid_post", layer=2, sae="topk")
    assert p.changed("changed") and not p.changed("boards") and not p.changed("news")
    assert p.truth_dirs("net", "changed") == [truth] and p.truth_dirs("bert", "news") == []
    targets = p.targets()
    assert layout.EMERGENCE.file("summary", model="net", dataset="boards") in targets
    assert f"{truth}/{layout.TRUTH.names['summary']}" in targets
    inputs = p.report_inputs("net", "changed")
    assert layout.EMERGENCE.file("plot", model="net", dataset="boards") in inputs["emergence"]
    assert inputs["truth"] == [f"{truth}/{layout.TRUTH.names['summary']}"]
    args = p.report_args("net", "changed")
    assert args[args.index("--emergence") + 1] == layout.EMERGENCE.path(model="net", dataset="boards")
    assert args[args.index("--truth") + 1] == truth
    assert p.report_inputs("bert", "news")["emergence"] == [] and "--emergence" not in p.report_args("bert", "news")
