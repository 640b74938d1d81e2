"""Synthetic activation sets with a known dictionary, and recipes for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workflow.sae import recipe_from_dict
from workflow.store.activations import ActivationWriter
from workflow.store.files import atomic_dir


def planted_dictionary_set(
    folder: Path,
    n: int = 50000,
    d: int = 64,
    m: int = 128,
    k: int = 4,
    noise: float = 0.01,
    offset: float = 0.5,
    seed: int = 0,
    dtype: str = "float32",
    shard_rows: int = 20000,
) -> np.ndarray:
    """Rows = sparse sums of k of m unit directions (weights U(0.5, 2)) + noise + offset.
    Returns the (m, d) ground-truth dictionary."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((m, d))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    idx = np.stack([rng.choice(m, k, replace=False) for _ in range(n)])
    coef = rng.uniform(0.5, 2.0, (n, k))
    x = np.einsum("nk,nkd->nd", coef, truth[idx]) + noise * rng.standard_normal((n, d)) + offset
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(
            tmp, d, dtype, shard_rows, {"hook_name": "blocks.0.hook_resid_post", "site": "resid_post", "layer": 1}
        )
        writer.append(x.astype(np.float32))
        writer.close()
    return truth


def recipe(architecture: str, **overrides):
    """A typed recipe of every key (as the config passes it to a job, defaults filled in)."""
    return recipe_from_dict(recipe_dict(architecture, **overrides))


def recipe_dict(architecture: str, **overrides) -> dict:
    """A full recipe as the config would pass it (defaults of the schema filled in)."""
    base = dict(
        architecture=architecture,
        d_sae=256,
        lr=3e-3,
        adam_betas=[0.9, 0.999],
        warmup_fraction=0.05,
        decay_fraction=0.2,
        train_tokens=400000,
        batch_size=512,
        seed=0,
        dtype="float32",
        normalize=True,
        b_dec_init="geometric_median",
        dead_tokens=20000,
        shuffle_buffer=16384,
        checkpoint_every=10**9,
        log_every=100,
    )
    extra = {
        "topk": dict(k=4, aux_k=None, aux_coefficient=1 / 32, sparse_kernels=True),
        "batchtopk": dict(
            k=4,
            aux_k=None,
            aux_coefficient=1 / 32,
            sparse_kernels=True,
            threshold_momentum=0.99,
            calibration_batches=16,
        ),
        "relu": dict(l1_coefficient=1.0, target_l0=None, sparsity_warmup_fraction=0.05),
        "jumprelu": dict(
            l0_coefficient=1.0, target_l0=4, sparsity_warmup_fraction=0.05, bandwidth=0.05, threshold_init=0.05
        ),
    }[architecture]
    return {**base, **extra, **overrides}


def best_match_cosine(truth: np.ndarray, W_dec: np.ndarray) -> np.ndarray:
    """Per true direction, the largest cosine with any decoder row."""
    W = W_dec / np.linalg.norm(W_dec, axis=1, keepdims=True)
    return (truth @ W.T).max(1)


def bare_sae(architecture: str, d_in: int, d_sae: int, **values):
    """An SAE of `architecture` with zero weights (a test sets them), from a minimal typed recipe."""
    from workflow.sae import architecture as registered

    return registered(architecture)(d_in, d_sae, recipe_from_dict({"architecture": architecture, **values}))
