"""The whole Snakefile on a checkpoint pair (a tiny GPT-2 and a copy of it trained for a few steps)
beside a classification fine-tune, on a labelled and an unlabelled dataset: similarity, SAEs spliced
into both LMs, the diff and the LM comparison all run; label-dependent analyses are skipped on the
unlabelled text and the report says so; switching the classifier's model to a checkpoint re-runs
only that model's jobs."""

from __future__ import annotations

import math
import re

import polars as pl
import pytest
import yaml

from tests.conftest import run_snakemake, tiny_study, word_reviews
from tests.tiny_models import make_tiny
from workflow.store.files import read_json

pytestmark = pytest.mark.workflow


def trained_copy(base, folder, steps: int = 30):
    """`base` trained for a few next-token steps on built-in text: the stand-in for a published fine-tune."""
    import torch
    from transformers import AutoModelForCausalLM

    from workflow.datasets import builtin
    from workflow.models import loading

    tokenizer = loading.load_tokenizer(str(base))
    model = AutoModelForCausalLM.from_pretrained(base)
    texts = [r["text"] for r in builtin.generate("app_rating", 64, seed=9)]  # the unlabelled notes' kind of text
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    for step in range(steps):
        batch = tokenizer(texts[(step * 8) % 64 :][:8], padding=True, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _cfg(base, tuned, clf_kind: dict) -> dict:
    return tiny_study(
        models={
            "clf": {"source": str(base), **clf_kind},
            "pair": {"source": str(base), "finetuned": {"kind": "checkpoint", "source": str(tuned)}},
        },
        datasets={
            "reviews": {"source": "file", "path": "reviews.csv"},
            "notes": {"source": "file", "path": "notes.txt"},
        },
        lm_compare={"max_docs": 60},
        probe={"layers": [2], "token_max_tokens": 2000},
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from workflow.datasets import builtin

    work = tmp_path_factory.mktemp("kinds-study")
    base = make_tiny("gpt2", work / "models" / "base")
    tuned = trained_copy(base, work / "models" / "tuned")
    word_reviews(work / "reviews.csv", 300)
    (work / "notes.txt").write_text("\n".join(r["text"] for r in builtin.generate("app_rating", 200, seed=9)))
    cfg = _cfg(base, tuned, {})
    (work / "study.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, "--cores", "2", "--configfile", "study.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    return work, base, tuned


def test_the_checkpoint_pair_is_compared_on_both_datasets(study):
    work, _, tuned = study
    for dataset in ("reviews", "notes"):
        lm = read_json(work / f"results/analysis/pair/{dataset}/lm/lm.json")
        if dataset == "notes":  # the copy learned text of this kind
            assert lm["finetuned"]["loss"] < lm["pretrained"]["loss"] - 0.5
        assert lm["kl"]["mean"] > 0.1 and lm["lms"]["finetuned"]["source"] == str(tuned)
        sim = pl.read_parquet(work / f"results/analysis/pair/{dataset}/similarity.parquet")
        assert sim.filter(pl.col("layer") == 0)["cka_debiased"][0] < 1.0  # the embeddings were trained too
        for variant in ("pretrained", "finetuned"):
            result = read_json(work / f"results/saes/pair/{variant}/{dataset}/resid_post/L2/topk/eval.json")
            assert math.isfinite(result["downstream"]["lm"]["loss_recovered"])
            assert ("task" in result["downstream"]) is (dataset == "reviews")
        transfer = pl.read_parquet(work / f"results/analysis/pair/{dataset}/resid_post/L2/topk/transfer.parquet")
        assert len(transfer) == 4 and transfer["lm_loss_recovered"].is_not_null().all()
    # no finetune job: the checkpoint is the fine-tuned variant; both variants get a fitted linear head
    assert not (work / "results/models/pair").exists()
    for variant in ("pretrained", "finetuned"):
        assert read_json(work / f"results/frozen_classifiers/pair/{variant}/reviews/metrics.json")["accuracy"] > 0.8


def test_unlabelled_text_skips_the_label_analyses(study):
    work, _, _ = study
    assert read_json(work / "results/data/notes/meta.json")["labelled"] is False
    assert not (work / "results/analysis/pair/notes/probe_summary").exists()
    assert not (work / "results/frozen_classifiers/pair/finetuned/notes").exists()
    features = pl.read_parquet(work / "results/saes/pair/finetuned/notes/resid_post/L2/topk/features.parquet")
    assert not [c for c in features.columns if c.startswith("auroc:")]
    page = (work / "results/reports/pair/notes/index.html").read_text()
    assert "Left out of this page" in page and "the dataset is unlabelled text" in page
    assert 'id="accuracy"' not in page


def test_the_report_shows_the_kl_table_and_the_index_says_each_kind(study):
    work, _, tuned = study
    page = (work / "results/reports/pair/reviews/index.html").read_text()
    assert "Language-model predictions" in page and "Tokens where the variants disagree most" in page
    assert "fine-tuned + fitted linear classifier" in page and str(tuned) in page
    index = (work / "results/reports/index.html").read_text()
    assert "checkpoint " + str(tuned) in index and ">classify<" in index
    assert "Not studied: clf on notes: clf is fine-tuned by classification" in index
    assert (work / "results/models/clf/classify/reviews/metrics.json").is_file()


def test_switching_one_model_to_a_checkpoint_reruns_only_its_jobs(study):
    work, base, tuned = study
    cfg = _cfg(base, tuned, {"finetuned": {"kind": "checkpoint", "source": str(tuned)}})
    (work / "switched.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, "-n", "--cores", "2", "--configfile", "switched.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", out, flags=re.M)
    assert jobs, out[-3000:]
    models = {dict(kv.split("=", 1) for kv in wildcards.split(", ")).get("model") for _, wildcards in jobs}
    assert models == {"clf"}, models
    ran = set(re.findall(r"^rule (\w+):", out, flags=re.M))
    assert "finetune" not in ran and "dataset" not in ran and "lm_compare" in ran  # clf now has an LM pair


def test_the_explorer_shows_a_checkpoint_pairs_language_models(study):
    """On unlabelled text the explorer's predictions are each variant's own LM: its top 5 next tokens
    and the text's mean next-token loss, equal to the loss computed here."""
    pytest.importorskip("starlette")
    import torch
    import torch.nn.functional as F
    from starlette.testclient import TestClient
    from transformers import AutoModelForCausalLM

    from workflow.explore import cli
    from workflow.models import loading

    work, base, tuned = study
    app, _ = cli.build(work / "results", str(work / "study.yaml"), device="cpu", hosts=["testserver"])
    text = "the app keeps crashing when I open it"
    where = {"model": "pair", "dataset": "notes", "site": "resid_post", "layer": 2, "recipe": "topk", "text": text}
    with TestClient(app) as client:
        answer = client.post("/api/analyse", json=where).json()
    ids = torch.tensor([loading.load_tokenizer(str(base)).convert_tokens_to_ids(answer["tokens"])])
    for variant, folder in (("pretrained", base), ("finetuned", tuned)):
        got = answer["variants"][variant]["prediction"]
        assert got["kind"] == "causal" and len(got["next"]) == 5
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        loss = F.cross_entropy(logits[:-1], ids[0, 1:])
        assert got["loss"] == pytest.approx(float(loss), abs=1e-4)
        assert got["next"][0][1] == pytest.approx(float(logits[-1].softmax(-1).max()), abs=1e-5)
