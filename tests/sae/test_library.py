"""`workflow.sae` is a library a notebook can import alone: from a NumPy array to an SAE folder that
SAELens loads, without the models, config, plan, runner or stages packages (nor transformers)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import numpy as np
import torch

from tests.conftest import ROOT

FORBIDDEN = ("workflow.models", "workflow.config", "workflow.plan", "workflow.runner", "workflow.stages")

# A notebook's session: plant 16 directions in 24 dimensions, two active per row, and train a TopK SAE.
NOTEBOOK = """
import json, sys
import numpy as np, torch
from workflow.sae import recipe_from_dict
from workflow.sae.training import train
from workflow.store.activations import ActivationSet

rng = np.random.default_rng(0)
directions = rng.standard_normal((16, 24)).astype(np.float32)
directions /= np.linalg.norm(directions, axis=1, keepdims=True)
codes = np.zeros((6000, 16), np.float32)
for row, active in enumerate(rng.integers(0, 16, (6000, 2))):
    codes[row, active] = rng.uniform(1, 2, 2)
acts = codes @ directions
aset = ActivationSet.from_array(acts, sys.argv[1] + "/acts", hook_name="blocks.0.hook_resid_post")
recipe = recipe_from_dict({"architecture": "topk", "d_sae": 32, "k": 2, "train_tokens": 120000,
                           "batch_size": 256, "lr": 3e-3, "seed": 0})
result = train(aset, recipe, sys.argv[1] + "/sae", {"hook_name": "blocks.0.hook_resid_post"}, torch.device("cpu"))
loaded = sorted(m for m in sys.modules if m.startswith(("workflow.", "transformers")))
print(json.dumps({"fvu": result["final"]["fvu"], "modules": loaded}))
"""


def test_the_sae_library_trains_from_an_array_alone_and_saelens_loads_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [m for m in out["modules"] if m.startswith((*FORBIDDEN, "transformers"))], out["modules"]
    assert out["fvu"] < 0.1, out  # two of 16 planted directions per row: a k=2 SAE reconstructs them

    from sae_lens import SAE

    theirs = SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    from workflow.sae import load

    ours = load(tmp_path / "sae")
    x = torch.from_numpy(np.load(next((tmp_path / "acts").glob("shard-*.npy")))[:200].copy())
    with torch.no_grad():
        assert torch.allclose(theirs.decode(theirs.encode(x)), ours.decode(ours.encode(x)), atol=1e-4)
        fvu = ((theirs.decode(theirs.encode(x)) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fvu < 0.1


def test_the_sae_package_imports_nothing_above_it():
    """The SAE code depends on `workflow.store` and `workflow.layout` at most."""
    found = []
    for path in sorted((ROOT / "workflow" / "sae").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            allowed = ("workflow.sae", "workflow.store", "workflow.layout")
            above = [n for n in names if n.startswith("workflow") and not n.startswith(allowed)]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in above]
    assert not found, "\n".join(found)
