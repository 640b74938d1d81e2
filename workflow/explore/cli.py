"""`python -m workflow explore [--results results] [--host 127.0.0.1] [--port 8765]`: type a text,
see what fine-tuning changed, on a finished study (or any part of one).

Serves the page and its JSON API (`workflow.explore.app`) on 127.0.0.1 unless told otherwise, and
prints the URL once it listens. Models and SAEs load on first use and stay loaded up to
``--memory-gb``. Reads the study's config (the repository's config.yaml unless ``--configfile``
names another) for where each variant and SAE lives; never writes to the results folder.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import yaml

from workflow import config as study_config
from workflow import layout
from workflow.explore.catalog import Catalog

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


def page(catalog: Catalog) -> str:
    """The explorer page: the report's shell, styles and scripts, with the study's catalog."""
    from workflow.explore.app import MAX_TEXT
    from workflow.report.render import render

    data = {"pairs": catalog.describe(), "max_text": MAX_TEXT}
    return render("explore.html.j2", title="Explore: what fine-tuning changed", data=data)


def build(results: str | Path, configfile: str | None, memory_gb: float = 4.0, device=None, hosts=None):
    """(app, catalog) of the study whose results folder is `results`; `hosts`: host names the app
    answers besides the loopback ones."""
    from workflow.explore.app import create_app
    from workflow.explore.engine import Engine

    results = Path(results).resolve()
    if not results.is_dir():
        raise SystemExit(f"--results: {results} is not a folder (run the study first: make demo)")
    if results.name != layout.RESULTS:
        raise SystemExit(f"--results: {results} is not a study's {layout.RESULTS}/ folder (its paths are fixed)")
    raw = yaml.safe_load(Path(configfile or ROOT / "config.yaml").read_text()) or {}
    import contextlib

    with contextlib.chdir(results.parent):  # the config's relative paths, as the study ran
        study = study_config.load(raw)
    catalog = Catalog(study, results.parent)
    if not catalog.pairs:
        raise SystemExit(f"{results}: no (model, dataset) of the study has both variants yet")
    return create_app(Engine(catalog, memory_gb * 1e9, device), page(catalog), hosts), catalog


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m workflow explore", description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", help="the study's results folder")
    p.add_argument("--configfile", default=None, help="the study's config (default: the repository's config.yaml)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--memory-gb", type=float, default=4.0, help="models and SAEs kept loaded up to this many GB")
    args = p.parse_args(argv)
    try:
        import uvicorn
    except ImportError:
        raise SystemExit("the explorer needs its extra: pip install -e '.[explore]' (or make explore)") from None
    app, catalog = build(args.results, args.configfile, args.memory_gb, hosts=[args.host])
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: anyone who can reach this address can use the explorer", args.host)

    class Ready(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else args.port
            print(f"explorer ready: http://{args.host}:{port}/  ({len(catalog.pairs)} model/dataset pairs)", flush=True)

    server = Ready(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    server.run()
