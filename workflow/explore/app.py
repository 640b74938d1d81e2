"""The explorer's web app (Starlette): one page, a JSON API behind it, and the study's report pages.

    GET  /                 the page (the report's page shell, styles and scripts)
    GET  /api/study        what the study has: (model, dataset) pairs, their SAEs, labels
    POST /api/analyse      {model, dataset, site, layer, recipe, text, top?, interventions?}
    POST /api/feature      {model, dataset, site, layer, recipe, variant, feature, text}
    POST /api/attention    {model, dataset, layer, head, text}
    GET  /results/...      the results folder's files, read only (the report's feature pages)

POST bodies must be ``application/json`` (a cross-site form cannot send it without a preflight) and
the Host header must name this machine. Every error is a JSON ``{"error": ...}`` with a 4xx status
(a 500 says only that the request failed,
never a traceback). Requests are capped in size and text length; computations run one at a time
in a worker thread, so the memory the models take stays what the engine's budget allows.
"""

from __future__ import annotations

import json
import logging
import threading

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from workflow.explore.engine import BadRequestError, Engine, NotFoundError

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # bytes of a request
MAX_TEXT = 2000  # characters of a text


class TrustedHosts:
    """Only requests whose Host header names one of `hosts` (any port) reach the app; others get a
    JSON 400, as every other error (Starlette's TrustedHostMiddleware answers in plain text)."""

    def __init__(self, app, hosts: list[str]):
        self.app, self.hosts = app, {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "").lower()
            name = host if host.endswith("]") else host.rsplit(":", 1)[0]
            if name not in self.hosts:
                error = f"host {host!r} is not one this explorer answers to ({', '.join(sorted(self.hosts))})"
                await JSONResponse({"error": error}, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ReadOnlyFiles(StaticFiles):
    """The results folder, GET and HEAD only; a path outside it (``..``, absolute) is a 404."""

    async def __call__(self, scope, receive, send):
        if scope["method"] not in ("GET", "HEAD"):
            await JSONResponse({"error": "the results folder is read only"}, 405)(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _field(body: dict, name: str, kind, default=None):
    value = body.get(name, default)
    if value is None:
        raise BadRequestError(f"{name}: missing")
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BadRequestError(f"{name}: {value!r} is not {'a number' if kind is int else 'text'}")
    return value


def _text(body: dict) -> str:
    text = _field(body, "text", str)
    if len(text) > MAX_TEXT:
        raise BadRequestError(f"text: {len(text)} characters, more than the {MAX_TEXT} allowed")
    if not text.strip():
        raise BadRequestError("text: empty")
    return text


class TooLargeError(BadRequestError):
    """A request over MAX_BODY bytes (HTTP 413)."""


def _no_constant(name: str):
    raise BadRequestError(f"the request holds {name}, which is not a JSON number")


async def body_of(request: Request) -> dict:
    """The request's JSON object (Content-Type application/json), at most MAX_BODY bytes, however it
    is sent (a chunked body has no content-length: it is counted as it arrives)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise BadRequestError("the request's Content-Type is not application/json")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise TooLargeError(f"the request is over {MAX_BODY} bytes")
    try:
        body = json.loads(bytes(raw), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequestError(f"the request is not JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request is not a JSON object")
    return body


def _where(b: dict) -> list:
    return [_field(b, "model", str), _field(b, "dataset", str), _field(b, "site", str), _field(b, "layer", int),
            _field(b, "recipe", str)]  # fmt: skip


class Api:
    """The JSON endpoints over an engine; one computation at a time, in a worker thread."""

    def __init__(self, engine: Engine):
        self.engine, self.lock = engine, threading.Lock()

    async def _run(self, fn, *args) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        def call():
            with self.lock:
                return fn(*args)

        return JSONResponse(await run_in_threadpool(call))

    async def analyse(self, request: Request):
        b = await body_of(request)
        interventions = b.get("interventions")
        if interventions is not None and not isinstance(interventions, dict):
            raise BadRequestError("interventions: not an object")
        return await self._run(self.engine.analyse, *_where(b), _text(b), _field(b, "top", int, 5), interventions)

    async def feature(self, request: Request):
        b = await body_of(request)
        args = [*_where(b), _field(b, "variant", str), _field(b, "feature", int), _text(b)]
        return await self._run(self.engine.feature, *args)

    async def attention(self, request: Request):
        b = await body_of(request)
        args = [_field(b, "model", str), _field(b, "dataset", str), _field(b, "layer", int), _field(b, "head", int)]
        return await self._run(self.engine.attention, *args, _text(b))

    async def study(self, request: Request):
        catalog = self.engine.catalog
        return JSONResponse({"pairs": catalog.describe(), "max_text": MAX_TEXT, "device": str(self.engine.device)})


async def _bad_request(request, exc):
    return JSONResponse({"error": str(exc)}, 413 if isinstance(exc, TooLargeError) else 400)


async def _not_found(request, exc):
    return JSONResponse({"error": str(exc)}, 404)


async def _http_error(request, exc: HTTPException):
    return JSONResponse({"error": exc.detail}, exc.status_code)


async def _server_error(request, exc):
    log.exception("request %s failed", request.url.path)
    return JSONResponse({"error": f"the request failed ({type(exc).__name__}); the server log has the details"}, 500)


async def _no_icon(request: Request):
    return Response(status_code=204)


def create_app(engine: Engine, page: str, extra_hosts: list[str] | None = None) -> Starlette:
    """The app over `engine`; `page` is the rendered HTML of the explorer page; `extra_hosts`: host
    names it answers besides the loopback ones (the --host it binds to)."""
    api = Api(engine)

    async def index(request: Request):
        return HTMLResponse(page)

    routes = [
        Route("/", index),
        Route("/favicon.ico", _no_icon),
        Route("/api/study", api.study),
        Route("/api/analyse", api.analyse, methods=["POST"]),
        Route("/api/feature", api.feature, methods=["POST"]),
        Route("/api/attention", api.attention, methods=["POST"]),
    ]
    results = engine.catalog.root / "results"
    if results.is_dir():
        routes.append(Mount("/results", ReadOnlyFiles(directory=results, follow_symlink=False), name="results"))
    handlers = {BadRequestError: _bad_request, NotFoundError: _not_found, HTTPException: _http_error}
    handlers[Exception] = _server_error
    # only requests addressed to this machine by name or loopback address: a page elsewhere that
    # rebinds its own name to 127.0.0.1 cannot read the app (DNS rebinding)
    hosts = ["127.0.0.1", "localhost", "[::1]", *(extra_hosts or [])]
    middleware = [Middleware(TrustedHosts, hosts=hosts)]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)
