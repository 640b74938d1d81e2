"""Stage `lm_compare`: where the two variants' language models disagree, token by token.

Both variants' LMs (`Plan.lm_spec`: a causal LM's next-token predictions, or a masked LM's at
fixed masked positions, `workflow.models.lm`) run over the same test documents
(`workflow.analysis.lm_disagreement`). Per scored
token: each variant's loss on the true token, each one's top prediction, and

    kl = KL(P_finetuned || P_pretrained)

of the two predicted distributions (nats): how much information the fine-tuned model's
prediction carries that the pretrained one's does not; 0 where they agree. Outputs:

- ``tokens.parquet``: every scored token (``doc_id``, ``pos`` in the document, or in its window where
  tokenize.stride windows documents, the token, a
  short left context, both losses and top predictions, ``kl``);
- ``documents.parquet``: per document, its mean and largest KL, both mean losses and the
  token where they disagree most;
- ``lm.json``: test loss and perplexity of both variants, the KL distribution (mean and
  quantiles), the most-disagreeing tokens and documents;
- ``kl.png``: the distribution of per-token KL (log scale).
"""

from __future__ import annotations

import logging
import time

from workflow import layout
from workflow.analysis import lm_disagreement
from workflow.models import loading
from workflow.models.sources import resolve_source
from workflow.report.figures.lm import kl_plot
from workflow.runner import cli
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)


def _load(spec: dict, device):
    return loading.load_lm(resolve_source(spec["source"]), device, spec["kind"], spec.get("body"))


def compare(specs: dict, tokens_path: str, cfg: dict) -> tuple:
    """Per scored token: losses, top predictions and KL of the two variants (`specs`: {variant: lm spec});
    and what the summary records of the run."""
    device = loading.pick_device()
    kind = specs["pretrained"]["kind"]
    models = {v: _load(specs[v], device) for v in layout.VARIANTS}
    tokenizer = loading.load_tokenizer(resolve_source(specs["pretrained"]["source"]))
    pad_id, mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
    docs = read_documents(tokens_path).sample(max_docs=cfg["max_docs"], seed=cfg["seed"])
    log.info("device: %s; %s LMs on %d test documents", loading.describe_device(device), kind, len(docs.token_ids))
    cols = lm_disagreement.token_scores(models, docs, kind, mask_id, cfg["batch_size"], pad_id, device)
    if not cols or not len(cols["kl"]):
        raise ValueError(f"{tokens_path}: no token to score (documents of one token each?)")
    table = lm_disagreement.token_table(cols, docs, tokenizer)
    return table, {"kind": kind, "n_docs": len(docs.token_ids), "device": loading.describe_device(device)}


def run(specs: dict, tokens_path: str, cfg: dict, out_dir: str, title: str = "") -> dict:
    started = time.perf_counter()
    table, info = compare(specs, tokens_path, cfg)
    docs = lm_disagreement.documents(table)
    summary = lm_disagreement.summarise(table, docs, {**info, "lms": specs}, cfg["n_top"])
    summary["seconds"] = time.perf_counter() - started
    names = layout.LM_COMPARE.names
    with atomic_dir(out_dir) as tmp:
        table.write_parquet(tmp / names["tokens"])
        docs.write_parquet(tmp / names["documents"])
        kl_plot(table["kl"].to_numpy(), title, tmp / names["plot"])
        write_json(summary, tmp / names["summary"])
    log.info(
        "%s: loss pretrained %.4f fine-tuned %.4f; KL mean %.4f median %.4f max %.3f over %d tokens; top-1 agree %.3f",
        out_dir,
        summary["pretrained"]["loss"],
        summary["finetuned"]["loss"],
        summary["kl"]["mean"],
        summary["kl"]["q50"],
        summary["kl"]["max"],
        summary["n_tokens"],
        summary["agreement"],
    )
    return summary


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    for v in layout.VARIANTS:
        cli.add_lm(parser, f"--{v}-lm", f"the {v} model")
    parser.add_argument("--tokens", required=True, help="tokens table of the test split")
    cli.add_config(parser, "lm_compare config")
    cli.add_load(parser)
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--title", default="")
    args = cli.parse_model_job(parser, argv)
    run({v: getattr(args, f"{v}_lm") for v in layout.VARIANTS}, args.tokens, args.config, args.out_dir, args.title)
