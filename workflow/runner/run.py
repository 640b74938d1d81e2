"""Run one stage or command in this process: `run_stage(["diff", "--sae", ...])`.

`python -m workflow` (``workflow/__main__.py``) hands a stage to this machine's job server where one
can take it (`workflow.runner.jobserver`), whose children call `run_stage` in turn; else it calls
`run_stage` itself."""

import importlib
import logging
import sys

from workflow.runner.commands import COMMANDS, GPU_STAGES


def run_stage(argv: list[str]) -> None:
    """Run the stage or command `argv[0]` with its arguments, in this process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if argv[0] in GPU_STAGES:
        from workflow.runner import gpus

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
