"""The whole Snakefile on tiny random BERT and GPT-2 models: values, not just files."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
import yaml

from tests.conftest import run_snakemake, word_reviews
from tests.references import linear_cka
from workflow.store.activations import ActivationSet
from workflow.store.files import read_json

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def study(tiny_bert, tiny_gpt2, tmp_path_factory):
    """Run the tiny study once; tests below read its results."""
    work = tmp_path_factory.mktemp("study")
    word_reviews(work / "reviews.csv", 400, "review", "stars")
    cfg = {
        "models": {"bert": {"source": str(tiny_bert)}, "gpt2": {"source": str(tiny_gpt2)}},
        "datasets": {
            "news": {"source": "builtin", "task": "news_topic", "n_train": 300, "n_test": 60, "seed": 1},
            "reviews": {"source": "file", "path": "reviews.csv", "text_column": "review", "label_column": "stars"},
        },
        "layers": [1, 2],
        "sites": ["resid_post", "mlp_out"],
        "tokenize": {"max_length": 48},
        "finetune": {"epochs": 3, "lr": 2e-3, "batch_size": 16, "bf16": False, "log_every": 5},
        "extract": {"batch_size": 16, "shard_rows": 500},
        "similarity": {"max_tokens": 100000},
        "saes": {
            "topk": {
                "architecture": "topk",
                "datasets": ["reviews"],
                "layers": [2],
                "sites": ["resid_post"],
                "d_sae": 64,
                "k": 4,
                "lr": 3e-3,
                "train_tokens": 6000,
                "batch_size": 256,
                "log_every": 5,
            },
            "relu": {
                "architecture": "relu",
                "datasets": ["reviews"],
                "layers": [2],
                "sites": ["resid_post"],
                "expansion_factor": 2,
                "l1_coefficient": 1.0,
                "lr": 3e-3,
                "train_tokens": 6000,
                "batch_size": 256,
            },
        },
        "sae_eval": {"max_docs": 40},
        "probe": {"sites": ["resid_post"], "layers": [2], "token_max_tokens": 3000},
        "heads": {"datasets": ["reviews"], "max_docs": 24, "pattern_docs": 4, "pattern_max_tokens": 16},
        # the diff's noise floor, a crosscoder and stage-wise fine-tuning where the SAEs are diffed
        "diff": {"seed_baseline": True},
        "crosscoders": {
            "cc": {
                "datasets": ["reviews"],
                "layers": [2],
                "sites": ["resid_post"],
                "d_sae": 64,
                "k": 6,
                "lr": 3e-3,
                "train_tokens": 6000,
                "batch_size": 256,
            }
        },
        "stagewise": {"enabled": True, "steps": 5},
    }
    (work / "study.yaml").write_text(yaml.safe_dump(cfg))
    # two fake cards: GPU jobs claim them (workflow/runner/gpus.py) and test_gpu_jobs_never_share_a_card checks the logs
    fake = {"STUDY_GPUS": "0,1", "STUDY_GPU_LOCKS": str(work / "gpu-locks")}
    result = run_snakemake(work, "--cores", "2", "--resources", "gpu=2", "--configfile", "study.yaml", env=fake)
    assert result.returncode == 0, result.stderr[-4000:]
    return work, cfg


def test_finetuning_learned_the_tasks(study):
    work, _ = study
    for model in ("bert", "gpt2"):
        metrics = read_json(work / f"results/models/{model}/classify/reviews/metrics.json")
        assert metrics["finetuned"]["accuracy"] >= 0.9, (model, metrics["finetuned"])  # one word decides
        assert metrics["finetuned"]["accuracy"] > metrics["pretrained"]["accuracy"]
        news = read_json(work / f"results/models/{model}/classify/news/metrics.json")
        assert news["train"]["steps"] == 3 * 19  # ceil(300 / 16) steps an epoch
        assert news["pretrained"]["n_docs"] == news["finetuned"]["n_docs"] == 60


def test_activation_sets_cover_every_token_of_both_variants(study):
    work, _ = study
    for model in ("bert", "gpt2"):
        tokens = pl.read_parquet(work / f"results/tokens/{model}/news/test.parquet")
        sets = {}
        for variant in ("pretrained", "finetuned"):
            root = work / f"results/activations/{model}/{variant}/news/test"
            summary = read_json(root / "extract.json")
            assert summary["sets"] == ["resid_post/L1", "mlp_out/L1", "resid_post/L2", "mlp_out/L2"]
            for site in ("resid_post", "mlp_out"):
                for layer in (1, 2):
                    s = ActivationSet(root / site / f"L{layer}")
                    assert s.n_rows == len(tokens) and s.manifest["variant"] == variant
                    sets[(variant, site, layer)] = s
        pre, ft = sets[("pretrained", "resid_post", 2)].read_all(), sets[("finetuned", "resid_post", 2)].read_all()
        assert not np.allclose(pre, ft)  # fine-tuning changed the model


def test_similarity_matches_the_stored_activations(study):
    """The streaming similarity stage agrees with CKA computed from the extract stage's sets."""
    work, _ = study
    for model in ("bert", "gpt2"):
        table = pl.read_parquet(work / f"results/analysis/{model}/news/similarity.parquet").sort("layer")
        assert table["layer"].to_list() == [0, 1, 2]
        assert table["hook_name"].to_list() == [
            "blocks.0.hook_resid_pre",
            "blocks.0.hook_resid_post",
            "blocks.1.hook_resid_post",
        ]
        row = table.row(2, named=True)
        base = work / f"results/activations/{model}/{{}}/news/test/resid_post/L2"
        x = ActivationSet(str(base).format("pretrained")).read_all().astype(np.float64)
        y = ActivationSet(str(base).format("finetuned")).read_all().astype(np.float64)
        assert row["n_tokens"] == len(x)
        assert row["cka_biased"] == pytest.approx(linear_cka(x, y, debiased=False), abs=2e-3)
        assert row["cka_debiased"] == pytest.approx(linear_cka(x, y, debiased=True), abs=2e-3)
        assert row["mean_cosine"] == pytest.approx(
            x.mean(0) @ y.mean(0) / np.linalg.norm(x.mean(0)) / np.linalg.norm(y.mean(0)), abs=1e-3
        )
        assert ((table["cka_debiased"] <= 1 + 1e-9) & (table["token_cosine"] <= 1 + 1e-9)).all()


def test_reports_show_the_numbers(study):
    work, _ = study
    metrics = read_json(work / "results/models/gpt2/classify/reviews/metrics.json")
    page = (work / "results/reports/gpt2/reviews/index.html").read_text()
    assert f"{metrics['finetuned']['accuracy']:.4f}" in page and 'src="img/similarity.png"' in page
    assert (work / "results/reports/gpt2/reviews/img/similarity.png").stat().st_size > 1000
    assert 'href="../../../activations/gpt2/finetuned/reviews/test/mlp_out/L2"' in page
    index = (work / "results/reports/index.html").read_text()
    assert len(re.findall(r'href="(bert|gpt2)/(news|reviews)/index.html"', index)) == 4
    # news has no SAE: no feature pages, and the index links only its report
    assert not (work / "results/reports/bert/news/feature.html").exists()
    assert len(re.findall(r'href="(bert|gpt2)/reviews/(feature|sentences).html"', index)) == 4


def test_the_diff_has_its_seed_floor_a_crosscoder_and_stagewise_beside_it(study):
    """Where the SAEs are diffed (reviews, L2 resid_post): the matching's noise floor from a seed twin, the
    crosscoder (both sides spliced into their variants) and stage-wise fine-tuning, side by side."""
    import torch
    from safetensors.torch import load_file

    work, _ = study
    for model in ("bert", "gpt2"):
        where = f"{model}/reviews/resid_post/L2"
        for sae in ("topk", "relu"):
            diff = read_json(work / f"results/analysis/{where}/{sae}/diff.json")
            base = diff["seed_baseline"]
            assert sum(base["floor"]["fractions"].values()) == pytest.approx(1.0)
            twin = read_json(work / f"results/seed_baselines/{where}/{sae}/cfg.json")
            first = read_json(work / f"results/saes/{model}/pretrained/reviews/resid_post/L2/{sae}/cfg.json")
            assert twin["metadata"]["recipe"]["seed"] == first["metadata"]["recipe"]["seed"] + 1
            w_twin = load_file(str(work / f"results/seed_baselines/{where}/{sae}/sae_weights.safetensors"))["W_dec"]
            w_first = load_file(
                str(work / f"results/saes/{model}/pretrained/reviews/resid_post/L2/{sae}/sae_weights.safetensors")
            )["W_dec"]
            assert w_twin.shape == w_first.shape and not torch.allclose(w_twin, w_first)
            for c, e in base["excess"].items():  # the interval holds the difference of the two shares
                assert e["low"] <= e["excess"] <= e["high"], c
                assert e["excess"] == pytest.approx(e["diff"] - e["floor"])
            stage = read_json(work / f"results/analysis/{where}/{sae}/stagewise/stagewise.json")
            assert stage["steps"] == 5
            d_sae = first["d_sae"]
            assert sum(stage["categories"]["pretrained"].values()) == d_sae
            methods = pl.read_parquet(work / f"results/analysis/{where}/{sae}/methods/methods.parquet")
            assert len(methods) == d_sae and {"matching", "stagewise", "cc_class"} <= set(methods.columns)
            agreement = read_json(work / f"results/analysis/{where}/{sae}/methods/methods.json")["agreement"]
            for pair, a in agreement.items():
                assert a["kappa"] is None or -1 <= a["kappa"] <= 1, pair
                assert sum(map(sum, a["confusion"])) == a["n"], pair
        cc = read_json(work / f"results/crosscoders/{where}/cc/crosscoder.json")
        latents = pl.read_parquet(work / f"results/crosscoders/{where}/cc/latents.parquet")
        assert cc["d_sae"] == len(latents) == 64 and 0 < cc["l0"] < 64
        assert sum(cc["classes"].values()) == int((latents["frequency"] > 0).sum())
        assert all(0 <= f < 1 for f in cc["fvu"].values())
        for variant in ("pretrained", "finetuned"):  # each side spliced into its own variant
            task = cc["downstream"][variant]["task"]
            assert task["n_docs"] == 40
            assert np.isfinite(task["loss_recovered"]) and task["loss_zero"] != task["loss_clean"]
        assert cc["downstream"]["pretrained"]["task"]["model"] != cc["downstream"]["finetuned"]["task"]["model"]
        assert ("lm" in cc["downstream"]["finetuned"]) == (model == "gpt2")
        page = (work / f"results/reports/{model}/reviews/index.html").read_text()
        assert 'id="methods"' in page and 'class="crosscoder-quality"' in page


def _data_file(path) -> object:
    """The payload of a report data file: reportData("name", payload);"""
    text = path.read_text()
    return json.loads(text[text.index(",") + 1 : text.rindex(")")])


def test_feature_data_files_hold_every_feature_with_its_examples_and_match(study):
    work, _ = study
    site = work / "results/reports/bert/reviews"
    diff = pl.read_parquet(work / "results/analysis/bert/reviews/resid_post/L2/topk/diff.parquet")
    for variant in ("pretrained", "finetuned"):
        folder = work / f"results/saes/bert/{variant}/reviews/resid_post/L2/topk"
        table = pl.read_parquet(folder / "features.parquet")
        examples = pl.read_parquet(folder / "examples.parquet")
        data = site / f"data/features/{variant}-resid_post-L2-topk"
        records = [r for n in range(2) for r in _data_file(data / f"c{n}.js")]  # 64 features, 32 a file
        assert [r["feature"] for r in records] == list(range(64)) and not (data / "c2.js").exists()
        side = diff.filter(pl.col("side") == variant)
        for r in records:
            row = table.row(r["feature"], named=True)
            assert r["frequency"] == pytest.approx(row["frequency"]) and r["hist_counts"] == row["hist_counts"]
            assert sum(r["hist_counts"]) == row["n_active"] == r["n_active"]
            mine = examples.filter(pl.col("feature") == r["feature"])
            assert len(r["examples"]) == len(mine)
            top = [e["activation"] for e in r["examples"] if e["kind"] == "top"]
            assert top == pytest.approx(
                mine.filter(pl.col("kind") == "top").sort("rank")["activation"].to_list(), abs=1e-4
            )
            match = side.row(r["feature"], named=True)
            assert r["match"]["partner"] == match["partner"] and r["match"]["category"] == match["category"]
        index = _data_file(data / "index.js")
        assert index["feature"] == list(range(64)) and index["category"] == side["category"].to_list()
    # the crosscoder: each latent on both sides, matched to itself, with both decoders' norms, its examples
    # shaded by that side's contribution
    folder = work / "results/crosscoders/bert/reviews/resid_post/L2/cc"
    latents = pl.read_parquet(folder / "latents.parquet")
    examples = pl.read_parquet(folder / "examples.parquet")
    for variant in ("pretrained", "finetuned"):
        data = site / f"data/features/{variant}-resid_post-L2-crosscoder.cc"
        records = [r for n in range(2) for r in _data_file(data / f"c{n}.js")]
        assert [r["feature"] for r in records] == list(range(64))
        for r in records:
            latent = latents.row(r["feature"], named=True)
            assert r["match"]["partner"] == r["feature"] and r["match"]["category"] == latent["class"]
            assert r["match"]["norm_pretrained"] == pytest.approx(latent["norm_pretrained"], rel=1e-5)
            assert r["match"]["norm_finetuned"] == pytest.approx(latent["norm_finetuned"], rel=1e-5)
            mine = {
                (e["kind"], e["rank"], e["doc_id"], e["center"]): e[f"acts_{variant}"]
                for e in examples.filter(pl.col("feature") == r["feature"]).iter_rows(named=True)
            }
            assert len(r["examples"]) == len(mine)
            for e in r["examples"]:
                assert e["acts"] == pytest.approx(mine[(e["kind"], e["rank"], e["doc_id"], e["center"])], abs=1e-3)
        assert any(r["examples"] for r in records)
    pre, ft = (np.asarray(examples[f"acts_{v}"].explode().to_numpy(), dtype=float) for v in ("pretrained", "finetuned"))
    assert not np.allclose(pre, ft)  # the two variants drive the latents differently


def test_report_in_a_browser(study, tmp_path):
    """Index, report page, feature page and sentence view in headless Chromium: real numbers, no console
    errors, nothing fetched from the network, screenshots that are not blank."""
    from tests.browser import assert_not_blank, open_browser

    work, _ = study
    reports = work / "results/reports"
    metrics = read_json(work / "results/models/bert/classify/reviews/metrics.json")
    folder = work / "results/saes/bert/finetuned/reviews/resid_post/L2/topk"
    table = pl.read_parquet(folder / "features.parquet")
    feature = table.sort("n_active", descending=True).row(0, named=True)
    examples = (
        pl.read_parquet(folder / "examples.parquet")
        .filter((pl.col("feature") == feature["feature"]) & (pl.col("kind") == "top"))
        .sort("rank")
    )
    partner, category = (
        pl.read_parquet(work / "results/analysis/bert/reviews/resid_post/L2/topk/diff.parquet")
        .filter((pl.col("side") == "finetuned") & (pl.col("feature") == feature["feature"]))
        .select("partner", "category")
        .row(0)
    )
    sentences = pl.read_parquet(work / "results/saes/bert/pretrained/reviews/resid_post/L2/topk/sentences.parquet")
    with open_browser() as page:
        page.goto((reports / "index.html").as_uri())
        rows = page.locator("table.index tbody tr")
        assert rows.count() == 4
        bert_reviews = page.locator("table.index tbody tr", has_text="bert / reviews")
        assert f"{metrics['finetuned']['accuracy']:.3f}" in bert_reviews.inner_text()
        page.screenshot(path=tmp_path / "index.png")

        bert_reviews.get_by_role("link", name="report").click()
        page.wait_for_selector("table.accuracy")
        assert f"{metrics['finetuned']['accuracy']:.4f}" in page.locator("table.accuracy").inner_text()
        for section in ("accuracy", "similarity", "saes", "diff", "changed", "probes", "heads"):
            assert page.locator(f"#{section}").count() == 1, section
        assert page.locator("table.saes tbody tr").count() == 4  # 2 recipes x 2 variants
        assert page.locator("table.similarity tbody tr").count() == 3
        assert page.locator("table.probes tbody tr").count() >= 3  # raw and both SAEs
        assert page.locator("table.heads-important tbody tr").count() >= 5
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])")
        assert len(images) >= 8 and all(width > 0 for _, width in images), images
        for linked in ("changed", "ranked", "cluster-details"):  # rows that name a feature link to its page
            assert page.locator(f"table.{linked} a[href^='feature.html#sae=']").count() > 0, linked
        page.screenshot(path=tmp_path / "report.png", full_page=True)

        key = "finetuned-resid_post-L2-topk"
        page.goto((reports / "bert/reviews/feature.html").as_uri() + f"#sae={key}&f={feature['feature']}")
        page.wait_for_selector(f".panel[data-sae='{key}']")
        mine = page.locator(f".panel[data-sae='{key}']")
        assert f"feature {feature['feature']}" in mine.locator(".feature-title").inner_text()
        assert f"{100 * feature['frequency']:.2f}%" in mine.locator(".stats").inner_text()
        assert mine.locator("svg.activation rect").count() == 20
        assert mine.locator("svg.density rect").count() == 24 and mine.locator("svg.density line").count() == 1
        assert mine.locator(".examples.top .example").count() == len(examples)
        first = examples.row(0, named=True)
        center = mine.locator(".examples.top .example").first.locator(".tok.center")
        assert center.get_attribute("title") == f"{first['tokens'][first['center']]}: {first['activation']:.3f}"
        auroc = mine.locator("table.labels tr").nth(2).locator("td").nth(2).inner_text()
        assert auroc == f"{feature['auroc:1']:.3f}"
        other = page.locator(".panel[data-sae='pretrained-resid_post-L2-topk']")
        assert category in mine.locator(".pill").first.inner_text()
        if category in ("retained", "drifted"):  # the matched pretrained feature, side by side
            assert f"feature {partner}" in other.locator(".feature-title").inner_text()
        else:  # new or dead: no partner panel
            assert other.count() == 0
        assert page.locator("#list tr[data-id]").count() == 64
        page.screenshot(path=tmp_path / "feature.png", full_page=True)

        # a crosscoder latent: on both variants side by side, its class and both decoders' norms
        latents = pl.read_parquet(work / "results/crosscoders/bert/reviews/resid_post/L2/cc/latents.parquet")
        latent = latents.sort("frequency", descending=True).row(0, named=True)
        key = "finetuned-resid_post-L2-crosscoder.cc"
        page.goto((reports / "bert/reviews/feature.html").as_uri() + f"#sae={key}&f={latent['latent']}")
        page.wait_for_selector(f".panel[data-sae='{key}']")
        sides = page.locator(".panel")
        assert sides.count() == 2
        assert sides.nth(0).get_attribute("data-sae") == "pretrained-resid_post-L2-crosscoder.cc"
        names = {"shared": "shared", "pretrained_only": "pretrained only", "finetuned_only": "fine-tuned only"}
        for i in range(2):
            panel = sides.nth(i)
            assert panel.get_attribute("data-feature") == str(latent["latent"])
            assert panel.locator(".pill").first.inner_text() == names[latent["class"]]
            line = panel.locator("p").first.inner_text()
            assert (
                f"pretrained {latent['norm_pretrained']:.3f}" in line
                and f"fine-tuned {latent['norm_finetuned']:.3f}" in line
            )
            assert panel.locator(".examples.top .example").count() > 0
        assert page.locator("#sae option", has_text="crosscoder cc resid_post L2 pretrained side").count() == 1

        page.goto((reports / "bert/reviews/sentences.html").as_uri() + "#doc=0&recipe=topk")
        page.wait_for_selector(".layer[data-place] .chip")
        doc = sentences.filter(pl.col("doc_id") == sentences["doc_id"][0])
        pre = page.locator(".layer[data-place='L2'] .pretrained .chip")
        assert pre.count() == len(doc)
        assert page.locator(".layer[data-place='L2'] .finetuned .chip").count() == len(doc)
        for i in range(len(doc)):
            fired = doc["features"][i].to_list()
            links = pre.nth(i).locator("a.feat")
            assert links.count() == min(3, len(fired))
            if fired:
                assert (
                    links.first.get_attribute("href") == f"feature.html#sae=pretrained-resid_post-L2-topk&f={fired[0]}"
                )
        page.screenshot(path=tmp_path / "sentences.png", full_page=True)
        assert page.errors == []
        assert all(url.startswith("file://") for url in page.requests), [
            u for u in page.requests if not u.startswith("file://")
        ]
    for name in ("index", "report", "feature", "sentences"):
        assert_not_blank(tmp_path / f"{name}.png")


def test_summary_prints_the_readme_tables(study, monkeypatch):
    from workflow import config
    from workflow.report.summary import summary

    work, _ = study
    monkeypatch.chdir(work)  # the study's dataset file is relative to it
    text = summary(config.load_file(work / "study.yaml"), str(work / "results"))
    metrics = read_json(work / "results/models/bert/classify/news/metrics.json")
    assert f"| bert / news | 300 / 60 | {metrics['pretrained']['accuracy']:.3f} |" in text
    assert text.count("\n| 2 | ") == 1 and "gpt2 / reviews" in text
    cc = read_json(work / "results/crosscoders/bert/reviews/resid_post/L2/cc/crosscoder.json")
    k, robust = cc["classes"], cc["robust"]
    cell = f"| {k['shared']} / {k['other']} / {k['pretrained_only']} ({robust['pretrained_only']}) / "
    cell += f"{k['finetuned_only']} ("
    methods = text[text.index("Diffing methods side by side") :].splitlines()
    row = next(line for line in methods if line.startswith("| bert / reviews | topk | resid_post | 2 | "))
    assert cell in row and f"FVU {cc['fvu']['pretrained']:.3f} / {cc['fvu']['finetuned']:.3f}" in row


def test_the_estimate_of_the_tiny_study_counts_its_jobs_and_activation_bytes(study):
    """The estimate's jobs are the jobs that ran; its tokens and activation bytes are those written."""
    from workflow.estimate.cli import estimate

    work, _ = study
    est = estimate(str(work / "study.yaml"), work)
    ran = {}
    for tsv in (work / "results/benchmarks").rglob("*.tsv"):
        rule = tsv.relative_to(work / "results/benchmarks").parts[0]
        ran[rule] = ran.get(rule, 0) + 1
    assert {stage: row["jobs"] for stage, row in est["stages"].items()} == ran
    shard_bytes = sum(f.stat().st_size for f in (work / "results/activations").rglob("shard-*.npy"))
    extract = est["stages"]["extract"]
    # the estimate counts the arrays' values, the shards add a 128-byte header each
    assert extract["disk"] == pytest.approx(shard_bytes, rel=0.01)
    summaries = (work / "results/activations").rglob("extract.json")
    assert extract["tokens"] == sum(json.loads(p.read_text())["n_tokens"] for p in summaries)
    assert all(row["seconds"]["cpu"] > 0 for row in est["stages"].values())
    assert est["total"]["seconds"]["h200"] is None  # no GPU figure measured: no time shown


def test_second_run_does_nothing(study):
    work, _ = study
    result = run_snakemake(work, "--cores", "2", "--configfile", "study.yaml", "--dry-run")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_editing_one_dataset_reruns_only_its_jobs(study):
    work, cfg = study
    cfg = json.loads(json.dumps(cfg))
    cfg["datasets"]["news"]["n_test"] = 61
    (work / "edited.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, "--cores", "1", "--configfile", "edited.yaml", "--dry-run", "--quiet", "rules")
    out = result.stdout + result.stderr
    assert result.returncode == 0
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    # news only: 1 dataset, 2 models x 2 splits tokens, 2 finetune, 2 frozen classifiers, 2 x 2 x 2 extract,
    # 2 similarity, 2 x 2 probes (L2 resid_post), 2 probe summaries, 2 k-means jobs, GPT-2's lm_compare,
    # 2 reports, index
    # (no SAE recipe covers news)
    assert jobs == {
        "dataset": "1",
        "tokens": "4",
        "finetune": "2",
        "frozen_classifier": "2",
        "extract": "8",
        "similarity": "2",
        "probe": "4",
        "kmeans": "2",
        "probe_summary": "2",
        "report": "2",
        "lm_compare": "1",  # the GPT-2 has an LM head: both variants' predictions are compared
        "report_index": "1",
        "all": "1",
        "total": "32",
    }


def _dry_run_jobs(work, cfg, name):
    (work / name).write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, "--cores", "1", "--configfile", name, "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, flags=re.M))


def test_editing_one_sae_recipe_reruns_only_that_recipes_jobs(study):
    work, cfg = study
    cfg = json.loads(json.dumps(cfg))
    cfg["saes"]["relu"]["l1_coefficient"] = 2.0
    # relu on reviews at L2 resid_post: 2 models x 2 variants, trained and evaluated; the 2 pages and the index
    # and their features, the 2 diffs (one per model) and the 2 per-recipe summaries; the pretrained SAE's seed
    # twin, its stage-wise fine-tuning and the methods table, per model; the probes and k-means of that layer
    # (they read the relu latents) and their 2 summaries. The crosscoder and the topk jobs are untouched.
    assert _dry_run_jobs(work, cfg, "recipe.yaml") == {
        "train_sae": "4",
        "train_sae_seed": "2",
        "evaluate_sae": "4",
        "features": "4",
        "diff": "2",
        "diff_summary": "2",
        "stagewise": "2",
        "methods": "2",
        "probe": "4",
        "kmeans": "2",
        "probe_summary": "2",
        "report": "2",
        "report_index": "1",
        "all": "1",
        "total": "34",
    }
    cfg["saes"]["relu"]["l1_coefficient"] = 1.0
    cfg["saes"]["relu"]["datasets"] = ["reviews", "news"]  # widening the scope adds jobs, re-runs none
    jobs = _dry_run_jobs(work, cfg, "scope.yaml")
    assert jobs["train_sae"] == "4" and jobs["evaluate_sae"] == "4" and jobs["report"] == "2"
    assert jobs["features"] == "4" and jobs["diff"] == "2" and jobs["diff_summary"] == "2"
    cfg["saes"]["relu"]["datasets"] = ["reviews"]
    cfg["probe"]["layers"] = [1, 2]  # widening the probe scope adds the L1 probes; re-runs only the gathering jobs
    jobs = _dry_run_jobs(work, cfg, "probe_scope.yaml")  # and the 4 report pages that show probes, and the index
    assert jobs == {
        "probe": "8",
        "kmeans": "4",
        "probe_summary": "4",
        "report": "4",
        "report_index": "1",
        "all": "1",
        "total": "22",
    }, jobs


def test_editing_the_crosscoder_or_stagewise_reruns_only_their_jobs(study):
    work, cfg = study
    cfg = json.loads(json.dumps(cfg))
    cfg["crosscoders"]["cc"]["k"] = 8
    # the crosscoder of each model, the 4 methods tables that read it (2 models x 2 recipes), 2 pages, the index
    assert _dry_run_jobs(work, cfg, "crosscoder.yaml") == {
        "crosscoder": "2",
        "methods": "4",
        "report": "2",
        "report_index": "1",
        "all": "1",
        "total": "10",
    }
    cfg["crosscoders"]["cc"]["k"] = 6
    cfg["stagewise"]["steps"] = 6
    assert _dry_run_jobs(work, cfg, "stagewise.yaml") == {
        "stagewise": "4",
        "methods": "4",
        "report": "2",
        "report_index": "1",
        "all": "1",
        "total": "12",
    }


# features of the 8 SAEs (2 models x 2 variants x 2 recipes at reviews L2); the 4 diffs, their 4 methods tables
# and 4 recipe summaries; the 4 probes and 2 k-means jobs that read the features tables, and 2 probe summaries;
# the 2 report pages with feature pages (reviews) and the index
AFTER_FEATURES = {
    "features": "8",
    "diff": "4",
    "methods": "4",
    "diff_summary": "4",
    "probe": "4",
    "kmeans": "2",
    "probe_summary": "2",
    "report": "2",
    "report_index": "1",
    "all": "1",
    "total": "32",
}


@pytest.mark.parametrize(
    "edited,expected",
    [
        ("workflow/stages/features.py", AFTER_FEATURES),
        # train_sae reaches it only through workflow.sae.training, diff through training too: every SAE, seed
        # twin, crosscoder and stage-wise fine-tuning is trained again, and everything that reads them follows
        (
            "workflow/sae/losses.py",
            {
                "train_sae": "8",
                "train_sae_seed": "4",
                "crosscoder": "2",
                "stagewise": "4",
                "evaluate_sae": "8",
                **AFTER_FEATURES,
                "total": "58",
            },
        ),
    ],
)
def test_editing_one_module_reruns_the_stages_that_import_it_and_their_dependants(study, tmp_path, edited, expected):
    """A copy of the workflow with one module edited: the jobs of every stage that imports it, directly or
    through other modules, and their dependants re-run; no others."""
    import shutil

    from tests.conftest import ROOT

    work, cfg = study
    src = tmp_path / "src"
    src.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(ROOT / name, src / name)
    for name in ("rules", "workflow", "schemas", "envs", "profiles"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / edited, "a") as f:
        f.write("\n# an edit\n")
    (work / "same.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(
        work, "--cores", "1", "--configfile", "same.yaml", "--dry-run", "--quiet", "rules", snakefile=src / "Snakefile"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, flags=re.M))
    assert jobs == expected, jobs


def test_adding_a_dataset_adds_only_its_jobs(study):
    work, cfg = study
    cfg = json.loads(json.dumps(cfg))
    cfg["datasets"]["extra"] = {"source": "builtin", "task": "movie_sentiment", "n_train": 100, "n_test": 40, "seed": 2}
    (work / "added.yaml").write_text(yaml.safe_dump(cfg))
    result = run_snakemake(work, "--cores", "1", "--configfile", "added.yaml", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n?)*)", result.stdout + result.stderr, flags=re.M)
    assert len(jobs) > 20
    for rule, block in jobs:
        assert rule in ("report_index", "all") or "dataset=extra" in block, (rule, block)
    assert sum(rule == "report_index" for rule, _ in jobs) == 1  # the index lists the new pages


def test_saes_are_trained_evaluated_and_reported(study):
    work, _ = study
    from workflow.sae import load

    for model in ("bert", "gpt2"):
        for variant in ("pretrained", "finetuned"):
            for recipe in ("topk", "relu"):
                folder = work / f"results/saes/{model}/{variant}/reviews/resid_post/L2/{recipe}"
                e = read_json(folder / "eval.json")
                assert e["variant"] == variant and e["layer"] == 2 and e["architecture"] == recipe
                assert 0 < e["explained_variance"] <= 1 and e["fvu"] < 0.9, e
                assert e["l0"] > 0 and 0 <= e["dead_fraction"] < 1
                task = e["downstream"]["task"]
                assert task["n_docs"] == 40 and task["loss_zero"] > task["loss_clean"], task  # the layer matters
                assert task["loss_recovered"] is not None
                if recipe == "topk":
                    assert e["l0"] <= 4 + 1e-9
                assert ("lm" in e["downstream"]) == (model == "gpt2")
                sae = load(folder)
                assert sae.cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
                log = pl.read_parquet(folder / "training_log.parquet")
                assert log["step"][-1] == 24  # ceil(6000 / 256)
        head = read_json(work / f"results/frozen_classifiers/{model}/pretrained/reviews/metrics.json")
        assert head["n_docs"] == 80
    page = (work / "results/reports/bert/reviews/index.html").read_text()
    assert 'class="saes"' in page and "fitted linear classifier" in page
    assert page.count("<tr>") >= 8


def test_features_and_diffs_of_the_tiny_study(study):
    work, _ = study
    for model in ("bert", "gpt2"):
        for recipe, d_sae in (("topk", 64), ("relu", 64)):
            for variant in ("pretrained", "finetuned"):
                folder = work / f"results/saes/{model}/{variant}/reviews/resid_post/L2/{recipe}"
                table = pl.read_parquet(folder / "features.parquet")
                e = read_json(folder / "eval.json")
                assert len(table) == d_sae
                assert table["frequency"].sum() == pytest.approx(e["l0"], rel=1e-4)  # same test tokens
                assert ((table["auroc:0"] >= 0) & (table["auroc:0"] <= 1)).all()
                examples = pl.read_parquet(folder / "examples.parquet")
                live = table.filter(pl.col("n_active") > 0)
                assert set(examples["feature"].unique()) == set(live["feature"])
            out = work / f"results/analysis/{model}/reviews/resid_post/L2/{recipe}"
            summary = read_json(out / "diff.json")
            for side in ("pretrained", "finetuned"):
                assert sum(summary["categories"][side]["counts"].values()) == d_sae
            transfer = pl.read_parquet(out / "transfer.parquet")
            assert len(transfer) == 4 and transfer["own"].sum() == 2
            for row in transfer.filter(pl.col("own")).iter_rows(named=True):
                e = read_json(work / f"results/saes/{model}/{row['sae']}/reviews/resid_post/L2/{recipe}/eval.json")
                if row["n_outliers"] == 0:  # then the same tokens and documents as evaluate_sae
                    assert row["explained_variance"] == pytest.approx(e["explained_variance"], abs=1e-6)
                    assert row["task_loss_recovered"] == pytest.approx(
                        e["downstream"]["task"]["loss_recovered"], abs=1e-6
                    )
            assert ("lm_loss_recovered" in transfer.columns) == (model == "gpt2")
        cats = pl.read_parquet(work / f"results/analysis/{model}/reviews/diff/topk/categories.parquet")
        assert cats.filter(pl.col("side") == "pretrained")["fraction"].sum() == pytest.approx(1.0)
        assert (work / f"results/analysis/{model}/reviews/diff/topk/transfer.png").stat().st_size > 1000


def test_probes_and_clusters_of_the_tiny_study(study):
    work, _ = study
    for model in ("bert", "gpt2"):
        folder = work / f"results/analysis/{model}/reviews/probe_summary"
        probes = pl.read_parquet(folder / "probes.parquet")
        # 2 variants x (raw + 2 SAEs) x 2 poolings at L2 resid_post
        assert len(probes) == 12 and set(probes["pooling"]) == {"mean", "first" if model == "bert" else "last"}
        mean = probes.filter(pl.col("pooling") == "mean")
        assert mean["accuracy"].min() >= 0.9, mean  # one word decides the label
        ft = probes.filter((pl.col("variant") == "finetuned") & (pl.col("representation") == "raw"))
        assert ft["accuracy"].min() >= 0.9, ft
        sparse = pl.read_parquet(folder / "sparse.parquet")
        assert sorted(set(sparse["k"])) == [1, 2, 4, 8, 16, 32]
        for _, group in sparse.group_by("representation", "variant"):
            chosen = group.sort("k")["features"].to_list()
            assert all(chosen[-1][: len(f)] == f for f in chosen)  # one ranking, read to depth k
        ranked = pl.read_parquet(folder / "ranked.parquet").filter(pl.col("representation") == "sae:topk")
        for row in ranked.filter(pl.col("rank") < 5).iter_rows(named=True):  # joined from the features tables
            table = pl.read_parquet(work / row["examples"].replace("examples.parquet", "features.parquet"))
            assert row["top_tokens"] == table.row(row["feature"], named=True)["top_tokens"]
            assert (
                row["examples"] == f"results/saes/{model}/{row['variant']}/reviews/resid_post/L2/topk/examples.parquet"
            )
        scores = pl.read_parquet(work / f"results/analysis/{model}/reviews/kmeans/scores.parquet")
        assert len(scores) == 6 and scores["ari"].is_between(-1, 1).all() and scores["purity"].min() >= 0.5
        assert (folder / "probe_accuracy.png").stat().st_size > 1000
        news = work / f"results/analysis/{model}/news/probe_summary"
        tokens = pl.read_parquet(news / "tokens.parquet")
        assert len(tokens) and tokens["auroc"].is_between(0, 1).all()
        news_probes = pl.read_parquet(news / "probes.parquet")
        assert set(news_probes["representation"]) == {"raw"}  # no SAE recipe covers news


def test_heads_of_the_tiny_study(study):
    work, _ = study
    for model in ("bert", "gpt2"):
        folder = work / f"results/analysis/{model}/reviews"
        for variant in ("pretrained", "finetuned"):
            summary = read_json(folder / f"heads/{variant}/heads.json")
            assert summary["n_docs"] == 24 and summary["n_layers"] == 2 and summary["n_heads"] == 4
            assert ("lm" in summary["clean"]) == (model == "gpt2")  # the LM head is measured where there is one
        fine_tuned = read_json(folder / "heads/finetuned/heads.json")["clean"]["task"]
        assert fine_tuned["accuracy"] >= 0.9, fine_tuned  # the classifier ablations start from: one word decides
        change = pl.read_parquet(folder / "heads_summary/changes.parquet")
        assert len(change) == 8 and change["js_distance"].is_between(0, 1).all()
        assert change["js_distance"].max() > 0.01  # fine-tuning moved some pattern
        ablation = pl.read_parquet(folder / "heads_summary/ablation.parquet")
        assert set(ablation["mode"]) == {"zero", "mean"}
        assert ablation.filter(pl.col("measure") == "task")["delta_loss"].abs().max() > 0
        assert (folder / "heads_summary/patterns.html").stat().st_size > 2000


def test_heads_scope_and_viewer_edits_rerun_only_their_jobs(study):
    work, cfg = study
    cfg = json.loads(json.dumps(cfg))
    cfg["heads"]["n_examples"] = 2  # only the viewer shows it (and the 2 report pages that carry the viewer)
    assert _dry_run_jobs(work, cfg, "heads_view.yaml") == {
        "heads_summary": "2",
        "report": "2",
        "report_index": "1",
        "all": "1",
        "total": "6",
    }
    cfg["heads"]["n_examples"] = 3
    cfg["heads"]["datasets"] = ["reviews", "news"]  # widening the scope adds the news heads (and their 2 pages)
    assert _dry_run_jobs(work, cfg, "heads_scope.yaml") == {
        "heads": "4",
        "heads_summary": "2",
        "report": "2",
        "report_index": "1",
        "all": "1",
        "total": "10",
    }


def test_gpu_jobs_never_share_a_card(study):
    """Every GPU job of the tiny study logged the fake card it claimed and when it let it go; no two jobs
    held one card at the same time, and both cards were used."""
    from datetime import datetime

    from workflow.runner.commands import GPU_STAGES

    work, _ = study
    held: dict[str, list] = {}
    for stage in GPU_STAGES:
        for log in (work / "logs" / stage).rglob("*.log"):
            text = log.read_text()
            claimed = re.search(r"GPU: claimed card (\S+) at (\S+) \(CUDA_VISIBLE_DEVICES=(\S+),", text)
            released = re.search(r"GPU: released card (\S+) at (\S+)", text)
            assert claimed and released, f"{log} does not say which card it used"
            assert claimed.group(1) == claimed.group(3) == released.group(1)
            held.setdefault(claimed.group(1), []).append(
                (datetime.fromisoformat(claimed.group(2)), datetime.fromisoformat(released.group(2)), log)
            )
    assert set(held) == {"0", "1"}, held.keys()
    assert sum(len(v) for v in held.values()) >= 30
    for card, spans in held.items():
        spans.sort()
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            assert start >= end, f"card {card}: {second} claimed it before {first} released it"


def test_killed_during_extract_resumes_to_complete_sets(tiny_bert, tmp_path):
    """SIGKILL the whole workflow while extract writes shards; the re-run completes every set."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    cfg = {
        "models": {"bert": {"source": str(tiny_bert)}},
        "datasets": {"apps": {"source": "builtin", "task": "app_rating", "n_train": 300, "n_test": 20}},
        "layers": [1, 2],
        "finetune": {"epochs": 1, "bf16": False},
        "extract": {"splits": ["train"], "batch_size": 1, "shard_rows": 64},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow/sitecustomize.py").write_text(  # every stored window takes 0.3 s longer
        "import time\n"
        "from workflow.store.activations import ActivationWriter\n"
        "orig = ActivationWriter.append\n"
        "ActivationWriter.append = lambda self, a: (time.sleep(0.3), orig(self, a))[1]\n"
    )
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(tmp_path / "slow"),
    }
    base = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--cores", "1"]
    # --configfile takes several values: it goes last, after the target
    cmd = [*base, "results/activations/bert/pretrained/apps/train/extract.json", "--configfile", "study.yaml"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    root = tmp_path / "results/activations/bert/pretrained/apps/train/resid_post"
    deadline = time.time() + 120
    while time.time() < deadline and not any(root.glob(".L*.partial-*/shard-00001.npy")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and its job, like a lost node
    proc.wait()
    assert any(root.glob(".L*.partial-*")), "the kill should land while shards are being written"
    assert not (root / "L1" / "manifest.json").exists() and not (root.parent / "extract.json").exists()
    env["PYTHONPATH"] = ""
    # a killed Snakemake leaves its lock behind: --unlock, then run again (rerun-incomplete is in the profile)
    subprocess.run(
        [*base, "--unlock", "--configfile", "study.yaml"], cwd=tmp_path, env=env, check=True, capture_output=True
    )
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    n_tokens = len(pl.read_parquet(tmp_path / "results/tokens/bert/apps/train.parquet"))
    for layer in (1, 2):
        assert ActivationSet(root / f"L{layer}").n_rows == n_tokens
    assert not any(root.glob(".L*.partial-*"))
