"""Stage `init_model`: the untrained model and tokenizer of a model of source ``scratch``.

A ``save_pretrained`` folder: the configured model type, shape and positions with random weights
(seeded) and its LM head (masked for encoders, causal for decoders), and a word-level tokenizer over
the corpus's vocabulary (`workflow.models.scratch`). It is step 0 of training (stage `pretrain`)
and the tokenizer of every tokens table of the model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from workflow import layout
from workflow.models import scratch
from workflow.runner import cli
from workflow.store import checksums
from workflow.store.files import atomic_dir

log = logging.getLogger(__name__)


def run(spec: dict, vocab: list[str], board_cells: int, out_dir: str) -> dict:
    with atomic_dir(out_dir) as tmp:
        config = scratch.init_folder(spec, vocab, board_cells, str(tmp))
        checksums.record(tmp, None, target=Path(out_dir) / layout.SCRATCH_INIT.names["weights"])
    s = spec["scratch"]
    log.info(
        "untrained %s: %d layers, d_model %d, %d heads, %s positions; vocabulary of %d tokens",
        s["family"],
        s["layers"],
        s["d_model"],
        s["heads"],
        s["positions"],
        config["vocab_size"],
    )
    return config


def main(argv=None) -> None:
    parser = cli.parser(__name__, __doc__)
    cli.add_config(parser, "model's config entry (with its scratch block)", "--spec")
    cli.add_config(parser, "corpus's vocabulary (a JSON list)", "--vocab")
    parser.add_argument("--board-cells", type=int, required=True, help="cells of a board (positions needed)")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    run(args.spec, args.vocab, args.board_cells, args.out_dir)
