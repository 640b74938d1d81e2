"""The tiny study submitted to a real one-node SLURM cluster through `--workflow-profile profiles/slurm`:
GPU rules go out with a GPU request, CPU rules without, and the results equal a local run's."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import polars as pl
import pytest
import yaml

from tests import slurm_node
from tests.conftest import ROOT, run_snakemake, word_reviews
from workflow.runner.commands import GPU_STAGES
from workflow.store.files import read_json

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    why = slurm_node.missing()
    if why and os.environ.get("STUDY_REQUIRE_SLURM"):  # CI sets it: there the test must run, not skip
        pytest.fail(f"STUDY_REQUIRE_SLURM is set but no SLURM cluster can run here: {why}")
    if why:
        pytest.skip(f"no SLURM cluster here: {why}")
    c = slurm_node.SlurmNode(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


def _study(folder, tiny_bert) -> None:
    word_reviews(folder / "reviews.csv", 120)
    cfg = {
        "models": {"bert": {"source": str(tiny_bert)}},
        "datasets": {"reviews": {"source": "file", "path": "reviews.csv"}},
        "layers": [1],
        "sites": ["resid_post"],
        "threads": 1,  # the test node has 2 CPUs; SLURM gets the rules' threads as --cpus-per-task
        "sae_threads": 1,
        "tokenize": {"max_length": 32},
        "finetune": {"epochs": 2, "lr": 2e-3, "batch_size": 16, "bf16": False},
        "heads": {"max_docs": 8, "pattern_docs": 2, "pattern_max_tokens": 16},
    }
    (folder / "study.yaml").write_text(yaml.safe_dump(cfg))


def _test_overrides() -> list[str]:
    """The one-node test cluster is small and has no accounting: every job asks for 500 MB and 10 min,
    status comes from squeue, and logs are kept."""
    profile = yaml.safe_load((ROOT / "profiles/slurm/profile.yaml").read_text())
    small = [
        f"{rule}:{key}={value}"
        for rule in profile["set-resources"]
        for key, value in (("mem_mb", 500), ("runtime", 10))
    ]
    return [
        "--default-resources",
        "mem_mb=500",
        "runtime=10",
        "--set-resources",
        *small,
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        "--jobs",
        "2",
        "--latency-wait",
        "5",
    ]


def test_tiny_study_on_slurm_equals_a_local_run(node, tiny_bert, tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    _study(on_slurm, tiny_bert)
    _study(local, tiny_bert)
    result = run_snakemake(
        on_slurm,
        "--workflow-profile",
        str(ROOT / "profiles/slurm"),
        "--configfile",
        "study.yaml",
        "--verbose",
        *_test_overrides(),
        env={**node.env, "SBATCH_PARTITION": "main"},
        timeout=1500,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    calls = [line for line in log.splitlines() if line.lstrip().startswith("sbatch call:")]
    by_rule: dict[str, list[str]] = {}
    for call in calls:
        rule = re.search(r"rule_(\w+?)_wildcards|rule_(\w+)", call)
        name = next(g for g in rule.groups() if g)
        by_rule.setdefault(name, []).append(call)
    gpu_rules = set(by_rule) & set(GPU_STAGES)
    cpu_rules = set(by_rule) - set(GPU_STAGES)
    assert {"finetune", "extract", "heads"} <= gpu_rules and {"dataset", "tokens", "report"} <= cpu_rules, (
        by_rule.keys()
    )
    for rule in gpu_rules:
        assert all("--gpus=1" in c for c in by_rule[rule]), by_rule[rule]
    for rule in cpu_rules:
        assert all("--gpu" not in c and "gres" not in c for c in by_rule[rule]), by_rule[rule]
    (tmp_path / "sbatch_calls.json").write_text(json.dumps(by_rule, indent=1))  # for the closing note

    result = run_snakemake(local, "--cores", "2", "--configfile", "study.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    same = [
        "results/models/bert/classify/reviews/metrics.json",
        "results/frozen_classifiers/bert/pretrained/reviews/metrics.json",
    ]
    for path in same:
        a, b = read_json(on_slurm / path), read_json(local / path)
        for variant in ("pretrained", "finetuned"):
            if variant in a:
                assert a[variant]["accuracy"] == b[variant]["accuracy"], path
    for table in (
        "results/analysis/bert/reviews/similarity.parquet",
        "results/analysis/bert/reviews/heads_summary/ablation.parquet",
        "results/analysis/bert/reviews/probe_summary/probes.parquet",
    ):
        a, b = pl.read_parquet(on_slurm / table), pl.read_parquet(local / table)
        assert a.drop(pl.selectors.contains("seconds")).equals(b.drop(pl.selectors.contains("seconds"))), table
    for shard in sorted((local / "results/activations/bert/finetuned/reviews/test/resid_post/L1").glob("*.npy")):
        twin = on_slurm / shard.relative_to(local)
        assert np.array_equal(np.load(shard), np.load(twin)), shard
