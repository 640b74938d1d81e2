"""The explorer (`python -m workflow explore`): a local web app over a finished study. `catalog`
(what the results folder holds), `compute` (forwards, codes, edits and predictions as plain
functions), `engine` (lazy loading and checked requests), `app` (the Starlette app and its JSON
API), `cli` (the command)."""
