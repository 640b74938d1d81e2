"""Stage `pretrain`: a model of source ``scratch`` trained from its untrained folder on its corpus.

The untrained model and tokenizer (stage `init_model`) train on the corpus's train split with the
family's own objective: masked-token prediction for encoders (BERT's 15%, 80/10/10, drawn afresh
each step), next-token prediction for decoders. The loop is the fine-tunes' (AdamW, linear warmup
and decay, length-bucketed batches, bf16 autocast where it helps, resumable checkpoints every
`checkpoint_every` steps). With ``positions: 2d`` the board's position table is row + column
(`workflow.models.scratch.factorise_positions`).

Snapshots are saved with ``save_pretrained`` at `snapshots` log-spaced steps (the last is the final
step) under ``steps/step-NNNNNN/``; ``final/`` is the trained model, the model source of every later
stage (the study's pretrained variant), and ``training.json`` holds the test loss before and after,
the snapshot steps, throughput and the config.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from workflow import layout
from workflow.models import loading, resume, scratch
from workflow.models.resume import Checkpoint
from workflow.models.sources import read_model_config
from workflow.models.training import masked_token_loss, next_token_loss, train
from workflow.runner import cli
from workflow.runner.codehash import code_version
from workflow.store import checksums
from workflow.store.files import atomic_dir, write_json
from workflow.store.tokens import read_documents

log = logging.getLogger(__name__)

NAMES = layout.SCRATCH.names


def snapshot_name(step: int) -> str:
    return f"step-{step:06d}"


def save_model(model, tokenizer, folder: Path) -> None:
    """save_pretrained with any factorised position table written out as a plain one."""
    model.save_pretrained(folder, state_dict=scratch.materialised_state_dict(model))
    tokenizer.save_pretrained(folder)


def load(init: str, positions: str, board_dim: int, device):
    """The untrained folder's tokenizer, objective and model (with 2d positions factorised)."""
    tokenizer = loading.load_tokenizer(init)
    kind = scratch.objective(read_model_config(init)["model_type"])
    model = loading.lm_class(kind).from_pretrained(init).to(device)
    if positions == "2d":
        scratch.factorise_positions(model, board_dim)
        model.to(device)
    return tokenizer, kind, model


def publish(model, tokenizer, staging: Path, steps: list[int], metrics: dict, out: Path) -> None:
    """The output folder, all at once: the final model, the snapshots of `staging`, training.json."""
    missing = [s for s in steps if not (staging / snapshot_name(s)).is_dir()]
    if missing:
        raise RuntimeError(f"{staging}: snapshots of steps {missing} are missing; remove {out} and run again")
    with atomic_dir(out) as tmp:
        save_model(model, tokenizer, tmp / NAMES["final"])
        for s in steps:
            shutil.copytree(staging / snapshot_name(s), tmp / NAMES["steps"] / snapshot_name(s))
        write_json(metrics, tmp / NAMES["metrics"])
        checksums.record(tmp, None, target=out / NAMES["metrics"])


def run(init: str, train_tokens: str, test_tokens: str, board_dim: int, cfg: dict, out_dir: str) -> dict:
    import torch

    from workflow.models.lm import mean_loss

    torch.manual_seed(cfg["seed"])
    device = loading.pick_device()
    amp_dtype = loading.autocast_dtype(cfg["bf16"], device)
    log.info("device: %s; autocast: %s", loading.describe_device(device), amp_dtype)
    tokenizer, kind, model = load(init, cfg["positions"], board_dim, device)
    train_docs = read_documents(train_tokens)
    test_docs = read_documents(test_tokens)
    pad_id, mask_id = tokenizer.pad_token_id, tokenizer.mask_token_id
    before = mean_loss(model, test_docs, kind, cfg["eval_batch_size"], pad_id, mask_id, device, amp_dtype)
    log.info(
        "untrained: test %s-token loss %.4f; %d train boards, %d tokens",
        kind,
        before["loss"],
        len(train_docs.token_ids),
        train_docs.n_tokens,
    )
    key = resume.fingerprint(train_tokens, resume.folder_listing(init), cfg, board_dim, code_version("pretrain"))
    out = Path(out_dir)
    staging = out / NAMES["staging"]  # snapshots of this run so far (a killed run resumes with them)
    checkpoint = Checkpoint(out / NAMES["checkpoint"], key, cfg["checkpoint_every"])
    steps_per_epoch = -(-len(train_docs.token_ids) // cfg["batch_size"])
    wanted = set(scratch.snapshot_steps(steps_per_epoch * cfg["epochs"], cfg["snapshots"]))

    def on_step(step: int, total: int) -> None:
        if step in wanted:
            with atomic_dir(staging / snapshot_name(step)) as tmp:
                save_model(model, tokenizer, tmp)
            log.info("snapshot at step %d/%d", step, total)

    loss_of = (
        next_token_loss
        if kind == "causal"
        else masked_token_loss(tokenizer, train_docs, cfg["seed"], cfg["mask_fraction"])
    )
    training = train(model, train_docs, cfg, pad_id, device, amp_dtype, loss_of, checkpoint, on_step)
    after = mean_loss(model, test_docs, kind, cfg["eval_batch_size"], pad_id, mask_id, device, amp_dtype)
    log.info(
        "trained: test loss %.4f (untrained %.4f); %.0f tokens/s",
        after["loss"],
        before["loss"],
        training["tokens_per_s"],
    )
    steps = sorted(wanted)
    metrics = {
        "objective": kind,
        "untrained": before,
        "trained": after,
        "train": training,
        "snapshot_steps": steps,
        "device": loading.describe_device(device),
        "autocast": str(amp_dtype),
        "config": cfg,
    }
    publish(model, tokenizer, staging, steps, metrics, out)
    return metrics


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    parser.add_argument("--init", required=True, help="the untrained model folder (stage init_model)")
    parser.add_argument("--train-tokens", required=True)
    parser.add_argument("--test-tokens", required=True)
    parser.add_argument("--board-dim", type=int, required=True, help="the corpus's board_dim (2d positions)")
    cli.add_config(parser, "scratch training config")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.init, args.train_tokens, args.test_tokens, args.board_dim, args.config, args.out_dir)
