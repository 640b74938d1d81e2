"""Stage `similarity`: how much fine-tuning changed each layer.

Both variants run over the same batches of the same tokens; for every layer
0..N (the residual stream after each block, 0 = embeddings) one streaming pass
accumulates the statistics of `similarity_stats.SimilarityAccumulator`:
cosine of mean activations (the reference study's measure), mean per-token
cosine, and linear CKA with both the biased and the debiased HSIC estimator,
each named as such. Output: a Parquet table (one row per layer) and a plot.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import polars as pl

from workflow import io, models
from workflow.similarity_stats import SimilarityAccumulator
from workflow.tokenize import batches, read_documents

log = logging.getLogger(__name__)

COLUMNS = ["mean_cosine", "token_cosine", "cka_debiased", "cka_biased", "norm_ratio"]


def compare(pretrained_source: str, finetuned_dir: str, tokens_path: str, max_tokens: int, batch_size: int,
            include_special: bool = True) -> pl.DataFrame:
    import torch

    device = models.pick_device()
    source = models.resolve_source(pretrained_source)
    bodies = [models.load_base_model(source, device), models.load_base_model(finetuned_dir, device)]
    depth = len(models.locate(bodies[0]).blocks)
    layers = list(range(depth + 1))
    docs = read_documents(tokens_path).sample(max_tokens=max_tokens)
    pad_id = models.load_tokenizer(source).pad_token_id
    d = bodies[0].config.hidden_size
    accs = {layer: SimilarityAccumulator(d, d, device=device) for layer in layers}
    log.info("device: %s; %d docs, %d tokens (cap %d), layers 0..%d, special tokens %s",
             models.describe_device(device), len(docs.token_ids), docs.n_tokens, max_tokens, depth,
             "included" if include_special else "excluded")
    wanted = [("resid_post", layer) for layer in layers]
    started = time.perf_counter()
    with models.Capture(bodies[0], wanted) as cap_pre, models.Capture(bodies[1], wanted) as cap_ft, torch.inference_mode():
        # the statistics do not depend on order: sort by length so batches carry little padding
        order = np.argsort([len(t) for t in docs.token_ids], kind="stable")
        for idx, inputs in batches(docs, batch_size, pad_id, order):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            keep = inputs["attention_mask"].bool()  # (B, T)
            if not include_special:
                for j, i in enumerate(idx):
                    keep[j, : len(docs.special[i])] &= torch.from_numpy(~docs.special[i]).to(device)
            pre, ft = cap_pre.run(**inputs), cap_ft.run(**inputs)
            for layer in layers:
                key = ("resid_post", layer)
                accs[layer].update(pre[key][keep], ft[key][keep])  # (n_kept, d) each
    seconds = time.perf_counter() - started
    log.info("%d tokens through both models in %.1f s (%.0f tokens/s)", docs.n_tokens, seconds, docs.n_tokens / seconds)
    rows = [{"layer": layer, "hook_name": models.hook_name("resid_post", layer), **accs[layer].result()} for layer in layers]
    return pl.DataFrame(rows).with_columns(pl.col("n_tokens").cast(pl.Int64))


def plot(table: pl.DataFrame, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    styles = {
        "mean_cosine": ("cosine of mean activations", "-", "o"),
        "token_cosine": ("mean per-token cosine", "-", "s"),
        "cka_debiased": ("linear CKA (debiased)", "-", "^"),
        "cka_biased": ("linear CKA (biased)", "--", "v"),
    }
    for column, (label, line, marker) in styles.items():
        ax.plot(table["layer"], table[column], line, marker=marker, label=label)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("pretrained vs fine-tuned")
    ax.set_xticks(table["layer"].to_list())
    ax.set_ylim(min(0.0, float(np.nanmin(table.select(list(styles)).to_numpy()))) - 0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run(pretrained_source: str, finetuned_dir: str, tokens_path: str, cfg: dict, out_table: str, out_plot: str,
        title: str = "") -> pl.DataFrame:
    table = compare(pretrained_source, finetuned_dir, tokens_path, cfg["max_tokens"], cfg["batch_size"],
                    cfg["include_special"])
    io.write_parquet(table, out_table)
    plot(table, title, out_plot)
    with pl.Config(tbl_rows=100, tbl_cols=20):
        log.info("\n%s", table.select("layer", *COLUMNS))
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workflow similarity", description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="pretrained model source")
    parser.add_argument("--finetuned", required=True, help="fine-tuned model folder")
    parser.add_argument("--tokens", required=True, help="tokens table of the split compared")
    parser.add_argument("--config", required=True, help="the similarity config as JSON")
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-plot", required=True)
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    run(args.pretrained, args.finetuned, args.tokens, json.loads(args.config), args.out_table, args.out_plot, args.title)
