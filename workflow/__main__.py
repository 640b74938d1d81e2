"""`python -m workflow <stage> [options]`: run one stage from the command line
(`python -m workflow summary` prints the README's tables of a finished study).

The stage runs in a child of this machine's job server where one can take it (its libraries already
imported: `workflow.runner.jobserver`), else in this process (`workflow.runner.run`)."""

import sys

from workflow.runner.commands import COMMANDS, STAGES


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in (*STAGES, *COMMANDS):
        sys.exit(f"usage: python -m workflow {{{','.join((*STAGES, *COMMANDS))}}} [options]")
    if argv[0] in STAGES:
        from workflow.runner import jobserver

        code = jobserver.client(argv)
        if code is not None:
            sys.exit(code)
    from workflow.runner.run import run_stage

    run_stage(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
