"""The explorer (`python -m workflow explore`): a local web app over a finished study. `catalog`
(what the results folder holds), `engine` (predictions, features, interventions and attention for a
typed text), `app` (the Starlette app and its JSON API), `cli` (the command)."""
