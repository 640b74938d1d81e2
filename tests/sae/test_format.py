"""The saved SAE folder: SAELens v6 layout, loadable by sae-lens itself with equal encode/decode."""

from __future__ import annotations

import json

import pytest
import torch

from tests.sae_helpers import planted_dictionary_set, recipe
from workflow.sae import load, training
from workflow.store.activations import ActivationSet

CPU = torch.device("cpu")
META = {
    "model_name": "tiny",
    "hook_name": "blocks.0.hook_resid_post",
    "hook_layer": 0,
    "study": {"site": "resid_post", "layer": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short-trained SAE per architecture, on inputs far from unit scale (so the folded scale matters)."""
    root = tmp_path_factory.mktemp("format")
    planted_dictionary_set(root / "acts", n=8000, d=32, m=64, offset=3.0)
    out = {}
    for arch in ("relu", "topk", "batchtopk", "jumprelu"):
        r = recipe(arch, d_sae=96, train_tokens=20000, batch_size=500)
        training.train(str(root / "acts"), r, str(root / arch), META, CPU)
        out[arch] = root / arch
    x = torch.from_numpy(ActivationSet(root / "acts").read_all()[:500].copy())
    return out, x


@pytest.mark.parametrize(
    "arch,saelens_name", [("relu", "standard"), ("topk", "topk"), ("batchtopk", "jumprelu"), ("jumprelu", "jumprelu")]
)
def test_cfg_and_tensors_follow_the_saelens_layout(trained, arch, saelens_name):
    from safetensors.torch import load_file

    folders, _ = trained
    cfg = json.loads((folders[arch] / "cfg.json").read_text())
    assert cfg["architecture"] == saelens_name and cfg["metadata"]["architecture"] == arch
    assert cfg["d_in"] == 32 and cfg["d_sae"] == 96 and cfg["normalize_activations"] == "none"
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post" and cfg["metadata"]["activation_scale"] != 1.0
    tensors = load_file(str(folders[arch] / "sae_weights.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    expected = {"W_enc": (32, 96), "W_dec": (96, 32), "b_enc": (96,), "b_dec": (32,)}
    if saelens_name == "jumprelu":
        expected["threshold"] = (96,)
    assert shapes == expected
    if arch == "topk":
        assert cfg["k"] == 4


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu"])
def test_sae_lens_loads_the_folder_and_encodes_and_decodes_like_us(trained, arch):
    from sae_lens import SAE

    folders, x = trained
    ours = load(folders[arch])
    theirs = SAE.load_from_disk(str(folders[arch]), device="cpu")
    with torch.no_grad():
        ours_acts, theirs_acts = ours.encode(x), theirs.encode(x)
        assert (ours_acts > 0).sum() > 0
        torch.testing.assert_close(theirs_acts, ours_acts, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(theirs_acts), ours.decode(ours_acts), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("arch", ["relu", "topk", "jumprelu"])
def test_folded_scale_reproduces_the_training_time_model(trained, arch, tmp_path):
    """The saved SAE on raw inputs equals the SAE as trained (inputs scaled, outputs unscaled)."""
    folders, x = trained
    saved = load(folders[arch])
    cfg = json.loads((folders[arch] / "cfg.json").read_text())
    scale = cfg["metadata"]["activation_scale"]
    trained_form = load(folders[arch])
    with torch.no_grad():  # un-fold by hand: weights of the normalised SAE
        trained_form.W_enc /= scale
        trained_form.W_dec *= scale
        trained_form.b_dec *= scale
        trained_form.scale.fill_(scale)
        torch.testing.assert_close(trained_form.encode(x), saved.encode(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(trained_form(x), saved(x), rtol=1e-4, atol=1e-3)
