"""Stage `crosscoder` on a synthetic pair with a known answer: removed atoms get pretrained-only
latents, new atoms fine-tuned-only ones, kept atoms shared latents with equal decoders; the saved
folder loads back to the same crosscoder; latent scaling flags a latent that only looks
fine-tuned-only because its pretrained decoder was shrunk to zero (Complete Shrinkage)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from workflow.analysis import crosscoding, synthetic
from workflow.sae.crosscoder import SIDES, load
from workflow.stages import crosscoder as stage
from workflow.store.activations import ActivationSet, PairedSets
from workflow.store.files import read_json

RECIPE = {
    "k": 6,
    "d_sae": 192,
    "lr": 5e-3,
    "batch_size": 512,
    "train_tokens": 300_000,
    "dead_tokens": 5000,
    "log_every": 500,
}
CFG = {
    "pretrained_only": 0.1,
    "finetuned_only": 0.9,
    "shared_band": 0.1,
    "nu_error_max": 0.2,
    "nu_reconstruction_max": 0.5,
    "max_tokens": None,
    "batch_rows": 4096,
    "retained_cosine": 0.9,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("crosscoder")
    pair = synthetic.make_pair(d=64, n_atoms=96, seed=3)
    sets = {
        split: synthetic.write_sets(pair, root / "acts", n, split) for split, n in (("train", 30000), ("test", 8000))
    }
    out = root / "cc"
    summary = stage.run(
        {v: str(sets["train"][v]) for v in SIDES},
        {v: str(sets["test"][v]) for v in SIDES},
        RECIPE,
        "cc",
        CFG,
        "synthetic",
        str(out),
    )
    return pair, sets, out, summary


def _latent_of(decoder: np.ndarray, atoms: np.ndarray) -> np.ndarray:
    return synthetic.best_features(decoder, atoms, 0.9)


def test_latent_classes_follow_the_planted_changes(trained):
    pair, _, out, summary = trained
    table = pl.read_parquet(out / "latents.parquet")
    cc = load(out)
    W = cc.W_dec.detach().numpy()
    pre_side, ft_side = W[:, : cc.side], W[:, cc.side :]
    cls = table["class"].to_numpy()
    removed = _latent_of(pre_side, pair.atoms_pre[pair.category == "removed"])
    new = _latent_of(ft_side, pair.new_atoms())
    kept = _latent_of(pre_side, pair.atoms_pre[pair.category == "kept"])
    assert (removed >= 0).mean() >= 0.85 and (new >= 0).mean() >= 0.85 and (kept >= 0).mean() >= 0.85
    assert (cls[removed[removed >= 0]] == "pretrained_only").mean() >= 0.9
    assert (cls[new[new >= 0]] == "finetuned_only").mean() >= 0.9
    assert (cls[kept[kept >= 0]] == "shared").mean() >= 0.9
    cos = table["decoder_cos"].to_numpy()
    assert np.median(cos[kept[kept >= 0]]) > 0.95  # a kept atom: both decoders point the same way
    changed = _latent_of(pre_side, pair.atoms_pre[pair.category == "changed"])
    # a rotated atom: one shared latent whose two decoders are the rotation apart (cos 45 deg = 0.71)
    assert np.median(cos[changed[changed >= 0]]) == pytest.approx(np.cos(np.deg2rad(45)), abs=0.1)
    # truly new latents pass latent scaling: the pretrained model does not carry their direction
    robust = table["robust"].to_numpy()
    assert robust[new[new >= 0]].mean() >= 0.9
    assert summary["classes"]["finetuned_only"] >= 0.85 * pair.n_new and max(summary["fvu"].values()) < 0.15
    assert read_json(out / "crosscoder.json")["robust"]["finetuned_only"] >= 0.85 * pair.n_new


def test_the_saved_crosscoder_reads_and_writes_raw_activations(trained):
    pair, sets, out, _ = trained
    cc = load(out)
    x = PairedSets(*(ActivationSet(sets["test"][v]) for v in SIDES)).rows(np.arange(500))
    saved = cc.saelens_tensors()
    xt = torch.from_numpy(x)
    pre = sum((xt[:, i * cc.side : (i + 1) * cc.side] - saved["b_dec"][i]) @ saved["W_enc"][i] for i in range(2))
    pre = pre + saved["b_enc"]
    acts = pre.relu() * (pre > saved["threshold"])  # the folder's JumpReLU form
    with torch.no_grad():
        torch.testing.assert_close(acts, cc.encode(xt), atol=1e-4, rtol=1e-4)
        recon_ft = acts @ saved["W_dec"][1] + saved["b_dec"][1]
        torch.testing.assert_close(recon_ft, cc.decode_side(cc.encode(xt), 1), atol=1e-4, rtol=1e-4)
    fvu = ((recon_ft.numpy() - x[:, cc.side :]) ** 2).sum() / ((x[:, cc.side :] - x[:, cc.side :].mean(0)) ** 2).sum()
    assert fvu < 0.15


def test_latent_scaling_flags_a_shrunk_decoder(trained):
    """Zero the pretrained decoder of shared latents: by decoder norms they become fine-tuned-only,
    but the pretrained activations still carry their direction, so nu (error) is high; the truly
    new latents keep a low nu."""
    pair, sets, out, _ = trained
    cc = load(out)
    table = pl.read_parquet(out / "latents.parquet")
    shared = np.flatnonzero((table["class"] == "shared").to_numpy() & (table["frequency"] > 0.02).to_numpy())[:5]
    with torch.no_grad():
        cc.W_dec[shared, : cc.side] = 0.0
    test = PairedSets(*(ActivationSet(sets["test"][v]) for v in SIDES))
    stats = crosscoding.statistics(cc, test, None, 4096)
    shrunk = crosscoding.latent_table(cc, stats, CFG)
    assert (shrunk["class"].to_numpy()[shared] == "finetuned_only").all()
    assert (stats["nu_error"][shared] > 0.5).all(), stats["nu_error"][shared]
    assert not shrunk["robust"].to_numpy()[shared].any()
    W = cc.W_dec.detach().numpy()
    new = _latent_of(W[:, cc.side :], pair.new_atoms())
    assert np.median(stats["nu_error"][new[new >= 0]]) < 0.2


def _pair_of_classifiers(tmp_path):
    """A tiny GPT-2 and a perturbed copy (the "fine-tuned" one) as two classifiers, their test tokens."""
    from tests.conftest import colour_words, make_tiny_gpt2, save_classifier
    from workflow.models import loading
    from workflow.models.classifier import classifier_layer
    from workflow.stages import tokens

    src = make_tiny_gpt2(tmp_path / "model")
    folders = {}
    for i, v in enumerate(SIDES):
        model = loading.load_classifier(str(src), 2, loading.load_tokenizer(str(src)).pad_token_id)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            classifier_layer(model).weight.normal_(0, 20.0, generator=torch.Generator().manual_seed(0))
            for p in model.transformer.parameters():
                p.add_(0.5 * i * p.std() * torch.randn(p.shape, generator=g))  # the fine-tuned body differs
        folders[v] = str(save_classifier(model, src, tmp_path / f"clf_{v}"))
    colour_words(tmp_path / "test.parquet", 24)
    tokens.run(str(tmp_path / "test.parquet"), str(folders["pretrained"]), 32, str(tmp_path / "tokens.parquet"))
    lms = {v: {"source": str(src), "kind": "causal", "body": str(folders[v])} for v in SIDES}
    return folders, lms, tmp_path / "tokens.parquet"


def _hand_crosscoder(d: int, swap: bool):
    """A crosscoder whose latents are +/- copies of each input dimension (relu(x) - relu(-x) = x):
    each side's decoder writes its own side back (lossless, whatever each side's input scale), or with
    `swap` the other side's (both sides at scale 1)."""
    from workflow.sae.crosscoder import Crosscoder, CrosscoderRecipe

    cc = Crosscoder(2 * d, 4 * d, CrosscoderRecipe(k=4, d_sae=4 * d)).eval()
    eye = torch.eye(2 * d)
    out = eye if not swap else torch.cat([eye[d:], eye[:d]])  # row i of the decoder: where latent i writes
    with torch.no_grad():
        cc.W_enc.copy_(torch.cat([eye, -eye], 1))
        cc.W_dec.copy_(torch.cat([out, -out], 0))
        cc.b_enc.zero_()
        cc.b_dec.zero_()
        cc.threshold.zero_()
        if not swap:  # each side normalised by its own scale, as training leaves it
            cc.scale.copy_(torch.cat([torch.full((d,), 2.0), torch.full((d,), 0.25)]))
    return cc


def test_a_lossless_crosscoder_spliced_into_each_variant_recovers_all_the_loss(tmp_path):
    from workflow.analysis.splices import crosscoder_effects
    from workflow.store.tokens import read_documents

    folders, lms, tokens = _pair_of_classifiers(tmp_path)
    docs = read_documents(str(tokens))
    result = crosscoder_effects(_hand_crosscoder(32, swap=False), docs, "resid_post", 1, folders, lms, 8, "cpu")
    for v in SIDES:
        for what in ("task", "lm"):
            e = result[v][what]
            assert e["loss_spliced"] == pytest.approx(e["loss_clean"], abs=1e-4), (v, what)
            assert e["kl"] == pytest.approx(0.0, abs=1e-6) and e["kl_zero"] > 0
            assert e["kl_recovered"] == pytest.approx(1.0, abs=1e-4)
        task = result[v]["task"]  # a random LM's loss barely depends on its input; the big head's does
        assert task["loss_zero"] != pytest.approx(task["loss_clean"], abs=1e-3)
        assert task["loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert result["pretrained"]["task"]["model"] == str(folders["pretrained"])


def test_the_splice_reads_the_partner_variant_on_the_same_tokens(tmp_path):
    """A crosscoder whose pretrained decoder writes the fine-tuned input back: spliced into the
    pretrained model it must put the fine-tuned model's own activation there, as a direct splice of
    the captured activation does."""
    import torch.nn.functional as F

    from workflow.analysis.splices import classifier, crosscoder_effects
    from workflow.models.hooks import Capture, Splice
    from workflow.store.tokens import labelled_batches, read_documents

    folders, lms, tokens = _pair_of_classifiers(tmp_path)
    docs = read_documents(str(tokens))
    result = crosscoder_effects(_hand_crosscoder(32, swap=True), docs, "resid_post", 1, folders, {}, 8, "cpu")
    assert set(result["pretrained"]) == {"task"}  # no LM specs: no LM effects
    pre, ft = classifier(str(folders["pretrained"]), "cpu"), classifier(str(folders["finetuned"]), "cpu")
    total, n = 0.0, 0
    with torch.no_grad():
        for _, inputs, labels in labelled_batches(docs, 8, pre.config.pad_token_id, "cpu"):
            with Capture(ft.base_model, [("resid_post", 1)]) as capture:
                other = capture.run(**inputs)[("resid_post", 1)]
            with Splice(pre.base_model, "resid_post", 1, lambda a, other=other: other):
                total += float(F.cross_entropy(pre(**inputs).logits, labels, reduction="sum"))
            n += len(labels)
    swapped = result["pretrained"]["task"]
    assert swapped["loss_spliced"] == pytest.approx(total / n, rel=1e-4)
    assert swapped["loss_spliced"] != pytest.approx(swapped["loss_clean"], rel=1e-3)  # the bodies differ


FEATURES_CFG = {
    "max_tokens": None,
    "batch_rows": 4096,
    "top_tokens": 5,
    "min_token_count": 3,
    "n_top": 10,
    "n_quantiles": 3,
    "per_quantile": 1,
    "window": 4,
    "seed": 0,
}


def test_latent_pages_show_which_variant_drives_each_latent(trained, tmp_path):
    """The features statistics of the latents agree with the crosscoder's own frequencies; on every example
    token both variants' contributions add up (with b_enc) to the latent's pre-activation; a new atom's
    latent is driven by the fine-tuned side, a removed atom's by the pretrained side."""
    from workflow.store.files import write_json

    pair, sets, out, _ = trained
    n = ActivationSet(sets["test"]["pretrained"]).n_rows
    doc = np.arange(n) // 20
    tokens = pl.DataFrame(
        {
            "row": np.arange(n),
            "doc_id": doc,
            "pos": np.arange(n) % 20,
            "token_id": np.arange(n) % 50,
            "token": [f"t{i % 50}" for i in range(n)],
            "label": doc % 2,
            "is_special": np.zeros(n, dtype=bool),
            "concepts": [[] for _ in range(n)],
        }
    )
    tokens.write_parquet(tmp_path / "tokens.parquet")
    write_json({"label_names": ["a", "b"], "concepts": []}, tmp_path / "meta.json")
    cc = load(out)
    test = PairedSets(*(ActivationSet(sets["test"][v]) for v in SIDES))
    summary = stage.latent_features(
        cc, test, str(tmp_path / "tokens.parquet"), str(tmp_path / "meta.json"), FEATURES_CFG, tmp_path, "cpu"
    )
    table = pl.read_parquet(tmp_path / "features.parquet")
    latents = pl.read_parquet(out / "latents.parquet")
    np.testing.assert_allclose(table["frequency"].to_numpy(), latents["frequency"].to_numpy(), atol=1e-9)
    examples = pl.read_parquet(tmp_path / "examples.parquet")
    assert summary["n_examples"] == len(examples) > 0
    top = examples.filter(pl.col("kind") == "top")
    centre = {v: np.array([a[c] for a, c in zip(top[f"acts_{v}"].to_list(), top["center"].to_list())]) for v in SIDES}
    b_enc = cc.b_enc.detach().numpy()[top["feature"].to_numpy()]
    np.testing.assert_allclose(
        centre["pretrained"] + centre["finetuned"] + b_enc, top["activation"].to_numpy(), rtol=1e-3, atol=1e-3
    )  # the latent fires: its activation is its pre-activation
    W = cc.W_dec.detach().numpy()
    for atoms, side, driver in (
        (pair.new_atoms(), slice(cc.side, None), "finetuned"),
        (pair.atoms_pre[pair.category == "removed"], slice(None, cc.side), "pretrained"),
    ):
        found = _latent_of(W[:, side], atoms)
        mine = top.filter(pl.col("feature").is_in(found[found >= 0].tolist()))["feature"].to_numpy()
        at = np.isin(top["feature"].to_numpy(), mine)
        other = "pretrained" if driver == "finetuned" else "finetuned"
        assert np.median(centre[driver][at]) > 3 * np.median(np.abs(centre[other][at])), driver


@pytest.mark.workflow
def test_a_killed_crosscoder_job_resumes_to_the_same_crosscoder(kill_study, tmp_path):
    """kill -9 after a checkpoint, --unlock, the same command: the crosscoder resumes (the log says
    so) and its weights, latents and feature tables equal the uninterrupted run's."""
    from tests.kills import KillRun
    from workflow.layout import CROSSCODER

    folder = "results/crosscoders/bert/news/resid_post/L2/cc"
    run = KillRun(kill_study, "crosscoder", f"{folder}/crosscoder.json", tmp_path)
    clean, killed, log = run.run(seed=2, after=CROSSCODER.names["checkpoint"])
    assert "resuming from" in log, log
    run.assert_same(clean, killed, folder)
