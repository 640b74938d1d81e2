"""One module per rule: `run(...)` on plain paths and values, and `main(argv)`, its command line.

Each shares its name with ``rules/<stage>.smk`` and ``tests/test_<stage>.py``. Stages never
import each other; what two stages share lives in the topic packages (`workflow.models`,
`workflow.sae`, `workflow.analysis`, `workflow.store`, `workflow.report`). The list of stages is
`workflow.runner.commands.STAGES`.
"""
