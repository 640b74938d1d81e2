"""`python -m workflow <stage> [options]`: run one stage from the command line
(`python -m workflow summary` prints the README's tables of a finished study).

The stage runs in a child of this machine's job server where one can take it (its libraries already
imported: `workflow.jobserver`), else in this process."""

import importlib
import logging
import sys

from workflow.commands import COMMANDS, GPU_STAGES, STAGES


def run_stage(argv: list[str]) -> None:
    """Run the stage or command `argv[0]` with its arguments, in this process."""
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


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in (*STAGES, *COMMANDS):
        sys.exit(f"usage: python -m workflow {{{','.join((*STAGES, *COMMANDS))}}} [options]")
    if argv[0] in STAGES:
        from workflow import jobserver

        code = jobserver.client(argv)
        if code is not None:
            sys.exit(code)
    run_stage(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
