"""TopK SAE training throughput: our trainer against a plain dense-decode reference.

Both train the same TopK SAE (FVU loss, unit-norm decoder rows, Adam) on the
same shuffled batches streamed from the same synthetic activation set. The
reference, written here, is what a straightforward PyTorch SAE does: dense
encoder with autograd through topk, scatter into a dense (tokens, d_sae) code,
dense decoder matmul. Ours is `workflow.sae.training.train` (sparse encoder
backward and embedding_bag decode, AuxK, dead-latent tracking, logging).

    python benchmarks/sae.py                      # d_in 768, 32x width, k 32 on the CPU
    python benchmarks/sae.py --device cuda --dtype bfloat16 --batch-size 4096 --steps 200
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workflow.sae import recipe_from_dict, training
from workflow.sae.stream import ShuffledRows
from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir


def synthetic_set(folder: Path, rows: int, d_in: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, d_in, "float16", 65536, {"hook_name": "blocks.0.hook_resid_post"})
        for start in range(0, rows, 16384):
            writer.append(rng.standard_normal((min(16384, rows - start), d_in), dtype=np.float32))
        writer.close()


def reference_run(acts: Path, d_in: int, d_sae: int, k: int, batch_size: int, steps: int, device, amp) -> float:
    """tokens/s of the dense-decode reference over `steps` steps (after one warm-up step)."""
    aset = ActivationSet(acts)
    scale = math.sqrt(d_in / aset.manifest["mean_sq_norm"])
    g = torch.Generator().manual_seed(0)
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = {"W_enc": W_dec.t().clone(), "b_enc": torch.zeros(d_sae), "W_dec": W_dec, "b_dec": torch.zeros(d_in)}
    params = {n: p.to(device).requires_grad_(True) for n, p in params.items()}
    opt = torch.optim.Adam(params.values(), lr=1e-4)
    batches = ShuffledRows(aset, batch_size, seed=0).batches()

    def step():
        x = torch.from_numpy(next(batches)).to(device) * scale
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pre = (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
            vals, idx = pre.topk(k, dim=-1)
            acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
            recon = acts @ params["W_dec"] + params["b_dec"]
            loss = (recon.float() - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w, gr = params["W_dec"], params["W_dec"].grad
            gr -= (gr * w).sum(1, keepdim=True) * w
        opt.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True)

    step()  # warm-up
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - started)


def ours_run(acts: Path, out: Path, d_sae: int, k: int, batch_size: int, steps: int, device, dtype: str) -> float:
    recipe = dict(
        architecture="topk",
        d_sae=d_sae,
        k=k,
        aux_k=None,
        aux_coefficient=1 / 32,
        sparse_kernels=True,
        lr=1e-4,
        adam_betas=[0.9, 0.999],
        warmup_fraction=0.0,
        decay_fraction=0.0,
        train_tokens=(steps + 1) * batch_size,
        batch_size=batch_size,
        seed=0,
        dtype=dtype,
        normalize=True,
        b_dec_init="mean",
        dead_tokens=10**9,
        shuffle_buffer=65536,
        checkpoint_every=10**9,
        log_every=1,
    )
    training.train(str(acts), recipe_from_dict(recipe), str(out), {"study": {}}, device)
    import polars as pl

    log = pl.read_parquet(out / "training_log.parquet")
    # tokens_per_s is cumulative since the first step; drop the warm-up step like the reference
    first, last = log.row(0, named=True), log.row(-1, named=True)
    t_first = first["tokens"] / first["tokens_per_s"]
    t_last = last["tokens"] / last["tokens_per_s"]
    return (last["tokens"] - first["tokens"]) / (t_last - t_first)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--expansion", type=int, default=32)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rows", type=int, default=65536, help="rows of the synthetic activation set")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    d_sae = args.d_in * args.expansion
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts"
        synthetic_set(acts, args.rows, args.d_in)
        print(
            f"TopK SAE: d_in {args.d_in}, d_sae {d_sae}, k {args.k}, batch {args.batch_size}, {args.steps} steps, "
            f"{args.dtype} on {args.device} ({torch.get_num_threads()} threads)"
        )
        ours = ours_run(acts, Path(tmp) / "sae", d_sae, args.k, args.batch_size, args.steps, device, args.dtype)
        print(f"ours (sparse kernels):   {ours:12,.0f} tokens/s")
        if not args.skip_reference:
            ref = reference_run(
                acts, args.d_in, d_sae, args.k, args.batch_size, args.steps, device, args.dtype == "bfloat16"
            )
            print(f"reference (dense decode): {ref:11,.0f} tokens/s")
            print(f"ratio ours / reference: {ours / ref:.2f}")


if __name__ == "__main__":
    main()
