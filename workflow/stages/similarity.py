"""Stage `similarity`: how much fine-tuning changed each layer.

Both variants run over the same batches of the same tokens; for every layer
0..N (the residual stream after each block, 0 = embeddings) one streaming pass
accumulates the statistics of `workflow.analysis.similarity.SimilarityAccumulator`:
cosine of mean activations (the reference study's measure), mean per-token
cosine, and linear CKA with both the biased and the debiased HSIC estimator,
each named as such. Output: a Parquet table (one row per layer) and a plot
(`workflow.report.figures.similarity`).
"""

from __future__ import annotations

import logging
import time

import polars as pl

from workflow.analysis.similarity import SimilarityAccumulator
from workflow.models import loading
from workflow.models.families import locate
from workflow.models.hooks import Capture
from workflow.models.sites import hook_name
from workflow.models.sources import resolve_source, resolve_weights
from workflow.report.figures.similarity import plot
from workflow.runner import cli
from workflow.store.files import write_parquet
from workflow.store.tokens import batches, length_order, read_documents

log = logging.getLogger(__name__)

COLUMNS = ["mean_cosine", "token_cosine", "cka_debiased", "cka_biased", "norm_ratio"]


def compare(
    pretrained_source: str,
    finetuned_dir: str,
    tokens_path: str,
    max_tokens: int,
    batch_size: int,
    include_special: bool = True,
) -> pl.DataFrame:
    import torch

    device = loading.pick_device()
    source = resolve_source(pretrained_source)
    bodies = [loading.load_base_model(source, device), loading.load_base_model(resolve_weights(finetuned_dir), device)]
    depth = len(locate(bodies[0]).blocks)
    layers = list(range(depth + 1))
    docs = read_documents(tokens_path).sample(max_tokens=max_tokens)
    pad_id = loading.load_tokenizer(source).pad_token_id
    d = bodies[0].config.hidden_size
    accs = {layer: SimilarityAccumulator(d, d, device=device) for layer in layers}
    log.info(
        "device: %s; %d docs, %d tokens (cap %d), layers 0..%d, special tokens %s",
        loading.describe_device(device),
        len(docs.token_ids),
        docs.n_tokens,
        max_tokens,
        depth,
        "included" if include_special else "excluded",
    )
    wanted = [("resid_post", layer) for layer in layers]
    started = time.perf_counter()
    with Capture(bodies[0], wanted) as cap_pre, Capture(bodies[1], wanted) as cap_ft, torch.inference_mode():
        # the statistics do not depend on order: sort by length so batches carry little padding
        for idx, inputs in batches(docs, batch_size, pad_id, length_order(docs)):
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
    rows = [{"layer": layer, "hook_name": hook_name("resid_post", layer), **accs[layer].result()} for layer in layers]
    return pl.DataFrame(rows).with_columns(pl.col("n_tokens").cast(pl.Int64))


def run(
    pretrained_source: str,
    finetuned_dir: str,
    tokens_path: str,
    cfg: dict,
    out_table: str,
    out_plot: str,
    title: str = "",
) -> pl.DataFrame:
    table = compare(
        pretrained_source, finetuned_dir, tokens_path, cfg["max_tokens"], cfg["batch_size"], cfg["include_special"]
    )
    write_parquet(table, out_table)
    plot(table, title, out_plot)
    with pl.Config(tbl_rows=100, tbl_cols=20):
        log.info("\n%s", table.select("layer", *COLUMNS))
    return table


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--pretrained", required=True, help="pretrained model source")
    parser.add_argument("--finetuned", required=True, help="fine-tuned model folder")
    parser.add_argument("--tokens", required=True, help="tokens table of the split compared")
    cli.add_config(parser, "similarity config")
    parser.add_argument("--out-table", required=True)
    parser.add_argument("--out-plot", required=True)
    parser.add_argument("--title", default="")
    cli.add_load(parser)
    args = cli.parse_model_job(parser, argv)
    run(args.pretrained, args.finetuned, args.tokens, args.config, args.out_table, args.out_plot, args.title)
