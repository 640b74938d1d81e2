"""`python -m workflow <stage> [options]`: run one stage from the command line
(`python -m workflow summary` prints the README's tables of a finished study)."""

import importlib
import logging
import sys

from workflow.commands import COMMANDS, GPU_STAGES, STAGES


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in (*STAGES, *COMMANDS):
        sys.exit(f"usage: python -m workflow {{{','.join((*STAGES, *COMMANDS))}}} [options]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if argv[0] in GPU_STAGES:
        from workflow import gpus

        gpus.claim()  # before torch starts CUDA
    module = COMMANDS.get(argv[0]) or f"workflow.stages.{argv[0]}"
    try:
        importlib.import_module(module).main(argv[1:])
    except Exception as exc:
        if not getattr(exc, "user_facing", False):
            raise
        # damaged input and the like: the message says what and how to fix it; a traceback would bury it
        logging.getLogger(f"workflow.{argv[0]}").error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
