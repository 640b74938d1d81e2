"""TopK SAE training against the peers: our trainer, SAELens's and EleutherAI sparsify's, in one run.

The three train the same TopK SAE (`--d-in`, `--width` x d_in latents, `--k`, batch `--batch-size`,
Adam at one lr, an AuxK term of 1/32 on all three) on the same activation set: a planted sparse
dictionary (`--atoms` unit directions, about `--active` of them per row with exponential magnitudes,
plus noise), scaled to mean squared norm d_in as our trainer scales it, and read in the same
shuffled order:

- ours: `workflow.sae.training.train` (sparse encoder backward, embedding_bag decode, AuxK, logging);
- SAELens 6.54: `SAETrainer` with a `TopKTrainingSAE` and the batches as its data provider;
- sparsify 1.3: its `SparseCoder` in the step of its `Trainer` (fused encoder, the eager embedding_bag
  decoder where Triton is absent, unit-norm decoder, gradient parallel to the decoder removed).

Rounds alternate the three; each reports tokens/s over its steps after the first (a warm-up).
After the same tokens, each SAE's FVU and dead fraction (latents that never fire) on held-out rows,
so that speed is not bought with quality. Prints medians over the rounds, and our ratio to each.

    python benchmarks/peers.py                      # d_in 768, widths 8x and 32x, k 32, batch 1,024, CPU
    python benchmarks/peers.py --device cuda --dtype bfloat16 --batch-size 4096 --steps 100
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from workflow.sae import load, recipe_from_dict, training
from workflow.sae.stream import ShuffledRows
from workflow.store.activations import ActivationSet, ActivationWriter
from workflow.store.files import atomic_dir

LR, AUX = 2e-4, 1 / 32
SEED, BUFFER = 0, 65536


def planted_set(folder: Path, rows: int, d_in: int, atoms: int, active: int, seed: int = 0) -> None:
    """Rows that are sparse sums of `atoms` unit directions (about `active` each) plus small noise."""
    rng = np.random.default_rng(seed)
    dictionary = rng.standard_normal((atoms, d_in)).astype(np.float32)
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    with atomic_dir(folder) as tmp:
        writer = ActivationWriter(tmp, d_in, "float32", 65536, {"hook_name": "blocks.0.hook_resid_post"})
        for start in range(0, rows, 8192):
            n = min(8192, rows - start)
            on = rng.random((n, atoms)) < active / atoms
            codes = on * rng.exponential(1.0, (n, atoms)).astype(np.float32)
            writer.append(codes @ dictionary + 0.05 * rng.standard_normal((n, d_in), dtype=np.float32))
        writer.close()


def batches(aset: ActivationSet, batch_size: int, device, scale: float):
    """The shuffled batches our trainer reads (same seed and buffer), scaled as it scales them."""
    for batch in ShuffledRows(aset, batch_size, SEED, BUFFER).batches():
        yield torch.from_numpy(batch).to(device) * scale


class Timed:
    """tokens/s between the end of the first step and the end of the last."""

    def __init__(self, steps: int, batch_size: int):
        self.steps, self.batch_size, self.marks = steps, batch_size, []

    def wrap(self, source, device):
        for i, batch in enumerate(source):
            if i >= 1:
                _sync(device)
                self.marks.append(time.perf_counter())
            if i >= self.steps:
                return
            yield batch

    def rate(self) -> float:
        return (len(self.marks) - 1) * self.batch_size / (self.marks[-1] - self.marks[0])


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours(acts: Path, out: Path, d_sae: int, k: int, batch_size: int, steps: int, device, dtype: str):
    recipe = dict(architecture="topk", d_sae=d_sae, k=k, aux_k=None, aux_coefficient=AUX, sparse_kernels=True,
                  lr=LR, warmup_fraction=0.0, decay_fraction=0.0, train_tokens=steps * batch_size,
                  batch_size=batch_size, seed=SEED, dtype=dtype, normalize=True, b_dec_init="mean",
                  dead_tokens=10**9, shuffle_buffer=BUFFER, checkpoint_every=10**9, log_every=1)  # fmt: skip
    training.train(str(acts), recipe_from_dict(recipe), str(out), {"study": {}}, device)
    import polars as pl

    log = pl.read_parquet(out / "training_log.parquet")
    first, last = log.row(0, named=True), log.row(-1, named=True)  # cumulative rates: drop the first step
    seconds = last["tokens"] / last["tokens_per_s"] - first["tokens"] / first["tokens_per_s"]
    sae = load(out, device)
    return (last["tokens"] - first["tokens"]) / seconds, lambda x: sae.decode(sae.encode(x)), sae.encode


def saelens(aset, scale, d_in, d_sae, k, batch_size, steps, device, dtype: str):
    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    torch.manual_seed(SEED)
    sae = TopKTrainingSAE(
        TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, aux_loss_coefficient=AUX, device=str(device))
    )
    cfg = SAETrainerConfig(
        total_training_samples=steps * batch_size,
        train_batch_size_samples=batch_size,
        lr=LR,
        lr_end=LR,
        device=str(device),
        autocast=dtype == "bfloat16",
        dead_feature_window=10**9,
    )
    timed = Timed(steps, batch_size)
    SAETrainer(cfg, sae, timed.wrap(batches(aset, batch_size, device, scale), device)).fit()
    _sync(device)
    timed.marks.append(time.perf_counter())
    return timed.rate(), lambda x: sae.decode(sae.encode(x)), sae.encode


def sparsify(aset, scale, d_in, d_sae, k, batch_size, steps, device, dtype: str):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(SEED)
    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=k), device=device, dtype=torch.float32)
    optimizer = torch.optim.Adam(sae.parameters(), lr=LR)
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    timed = Timed(steps, batch_size)
    for step, x in enumerate(timed.wrap(batches(aset, batch_size, device, scale), device)):
        if step == 0:
            sae.b_dec.data = x.mean(0)  # its trainer's first step
        sae.set_decoder_norm_to_unit_norm()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            out = sae(x, dead_mask=since_fired > 10**9)
        (out.fvu + AUX * out.auxk_loss).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()
        since_fired += x.shape[0]
        since_fired[out.latent_indices.flatten()] = 0
    _sync(device)
    timed.marks.append(time.perf_counter())
    sae.set_decoder_norm_to_unit_norm()
    return timed.rate(), lambda x: sae(x).sae_out, lambda x: _dense(sae.encode(x), d_sae)


def _dense(encoded, d_sae: int) -> torch.Tensor:
    top_acts, top_indices = encoded[0], encoded[1]
    return torch.zeros(top_acts.shape[0], d_sae, device=top_acts.device).scatter_(1, top_indices, top_acts)


@torch.no_grad()
def quality(reconstruct, encode, x: torch.Tensor, d_sae: int, raw_scale: float) -> tuple[float, float]:
    """FVU and the share of latents that never fire on held-out rows `x` (already scaled; ours reads
    raw activations, its saved weights having the scale folded in, so it gets x / raw_scale)."""
    fired = torch.zeros(d_sae, dtype=torch.bool, device=x.device)
    err = total = 0.0
    for chunk in x.split(1024):
        inp = chunk / raw_scale
        recon = reconstruct(inp).float() * raw_scale
        err += float((recon - chunk).pow(2).sum())
        total += float((chunk - x.mean(0)).pow(2).sum())
        fired |= (encode(inp) > 0).any(0)
    return err / total, 1.0 - float(fired.float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 32], help="d_sae = width x d_in")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=12, help="training steps per trainer and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--atoms", type=int, default=4096)
    parser.add_argument("--active", type=int, default=24)
    parser.add_argument("--heldout", type=int, default=8192)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        acts = Path(tmp) / "acts"
        planted_set(acts, args.steps * args.batch_size + BUFFER, args.d_in, args.atoms, args.active)
        aset = ActivationSet(acts)
        scale = math.sqrt(args.d_in / aset.manifest["mean_sq_norm"])
        held = Path(tmp) / "held"
        planted_set(held, args.heldout, args.d_in, args.atoms, args.active, seed=0)  # same dictionary, new rows
        x_held = torch.from_numpy(np.asarray(ActivationSet(held).read_all(), np.float32)).to(device) * scale
        print(f"TopK SAE, d_in {args.d_in}, k {args.k}, batch {args.batch_size}, {args.steps} steps, {args.dtype} "
              f"on {device} ({torch.get_num_threads()} threads); {args.rounds} rounds, medians")  # fmt: skip
        for width in args.widths:
            d_sae = width * args.d_in
            runs = {"ours": [], "SAELens": [], "sparsify": []}
            for r in range(args.rounds):
                shape = (d_sae, args.k, args.batch_size, args.steps, device, args.dtype)
                rate, rec, enc = ours(acts, Path(tmp) / f"ours-{width}-{r}", *shape)
                runs["ours"].append((rate, *quality(rec, enc, x_held, d_sae, scale)))
                for name, trainer in (("SAELens", saelens), ("sparsify", sparsify)):
                    rate, rec, enc = trainer(aset, scale, args.d_in, *shape)
                    runs[name].append((rate, *quality(rec, enc, x_held, d_sae, 1.0)))
            med = {n: [statistics.median(v[i] for v in vals) for i in range(3)] for n, vals in runs.items()}
            print(f"\n{width}x ({d_sae:,} latents)     tokens/s   FVU     dead")
            for name, (rate, fvu, dead) in med.items():
                print(f"  {name:9s} {rate:12,.0f}   {fvu:.4f}  {dead:.3f}")
            for name in ("SAELens", "sparsify"):
                print(f"  ours / {name}: {med['ours'][0] / med[name][0]:.2f}")


if __name__ == "__main__":
    main()
