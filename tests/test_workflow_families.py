"""The whole Snakefile on a tiny Llama (grouped-query attention, untied LM head, BOS) and a tiny
GPT-Neo (the TinyStories family): extraction, SAEs with the LM-loss splice, diff, heads, report."""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
import yaml

from tests.conftest import run_snakemake, tiny_study, word_reviews
from tests.tiny_models import BOS, make_tiny
from workflow.store.files import read_json

pytestmark = pytest.mark.workflow
MODELS = ("llama", "gpt_neo")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    work = tmp_path_factory.mktemp("families-study")
    sources = {m: str(make_tiny(m, work / "models" / m)) for m in MODELS}
    word_reviews(work / "reviews.csv", 300)
    cfg = tiny_study(
        models={m: {"source": s} for m, s in sources.items()},
        datasets={"reviews": {"source": "file", "path": "reviews.csv"}},
        sites=["resid_post", "attn_out"],
        probe={"sites": ["resid_post"], "layers": [2], "token_max_tokens": 2000},
    )
    cfg["saes"]["topk"]["sites"] = ["resid_post"]
    (work / "study.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, "--cores", "2", "--configfile", "study.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    return work


def test_llama_tokens_open_with_bos_and_gpt_neo_tokens_do_not(study):
    for model, bos in (("llama", True), ("gpt_neo", False)):
        first = pl.read_parquet(study / f"results/tokens/{model}/reviews/test.parquet").filter(pl.col("pos") == 0)
        assert bool((first["token_id"] == BOS).all()) is bos


@pytest.mark.parametrize("model", MODELS)
def test_both_variants_are_classifiers_above_chance(study, model):
    metrics = read_json(study / f"results/models/{model}/classify/reviews/metrics.json")
    assert metrics["finetuned"]["accuracy"] > 0.8


@pytest.mark.parametrize("model", MODELS)
def test_saes_are_spliced_into_the_language_model(study, model):
    for variant in ("pretrained", "finetuned"):
        folder = study / f"results/saes/{model}/{variant}/reviews/resid_post/L2/topk"
        cfg = json.loads((folder / "cfg.json").read_text())
        assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
        result = read_json(folder / "eval.json")
        lm = result["downstream"]["lm"]
        assert lm["kind"] == "causal" and lm["n_tokens"] > 0
        assert lm["body"] == (None if variant == "pretrained" else f"results/models/{model}/classify/reviews")
        assert all(math.isfinite(lm[k]) for k in ("loss_spliced", "kl", "kl_zero"))
        assert math.isfinite(result["downstream"]["task"]["loss_recovered"])


@pytest.mark.parametrize("model", MODELS)
def test_diff_transfer_has_lm_rows(study, model):
    transfer = pl.read_parquet(study / f"results/analysis/{model}/reviews/resid_post/L2/topk/transfer.parquet")
    assert len(transfer) == 4 and transfer["lm_loss_recovered"].is_not_null().all()


@pytest.mark.parametrize("model", MODELS)
def test_heads_are_query_heads_ablated_on_task_and_lm(study, model):
    folder = study / f"results/analysis/{model}/reviews/heads/finetuned"
    heads = pl.read_parquet(folder / "heads.parquet")
    assert len(heads) == 2 * 4  # 2 blocks x 4 query heads (the Llama has 2 key/value heads)
    ablation = pl.read_parquet(folder / "ablation.parquet")
    assert set(ablation["measure"]) == {"task", "lm"}
    assert ablation.filter(pl.col("measure") == "lm")["delta_loss"].abs().max() > 0


@pytest.mark.parametrize("model", MODELS)
def test_report_renders(study, model):
    page = (study / f"results/reports/{model}/reviews/index.html").read_text()
    assert "topk" in page and "L2" in page
