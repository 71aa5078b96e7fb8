"""The Starlette application: routes, templates, static files, the guard and the error pages.

Only GET (and HEAD) routes exist, so no request can ask for a change; every error is a page with one
line saying what was wrong (404 for an unknown run, item or sha or a non-numeric id, 400 for a refused
statement), never a traceback.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from capstore.errors import CapstoreError, StoreError, first_line
from capstore.serve.connections import AnalysisConnections
from capstore.serve.formatting import FILTERS
from capstore.serve.guard import Guard
from capstore.serve.media import Thumbnails, UnknownMedium
from capstore.serve.pages import NotFound
from capstore.store.engine import Store

log = logging.getLogger("capstore.serve")
PACKAGE = Path(str(resources.files("capstore.serve")))


@dataclass
class ServeState:
    """What every request reads through: the store, the shared analysis connection, the thumbnails."""

    store: Store
    connections: AnalysisConnections
    thumbnails: Thumbnails
    templates: Jinja2Templates


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(PACKAGE / "templates"))
    t.env.filters.update(FILTERS)
    t.env.globals["metric_label"] = metric_label
    return t


def metric_label(name: str) -> str:
    return {"Bleu_4": "BLEU-4", "Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3",
            "ROUGE_L": "ROUGE-L"}.get(name, name)


def make_app(store: Store, *, token: str | None = None, loopback_only: bool = True, analysis: str | None = None,
             thumbnails: Path | None = None, idle_close_s: float | None = None, memo: bool = True) -> Guard:
    """The viewer of ``store`` as an ASGI app (serve it with uvicorn, or test it with Starlette's TestClient).

    ``token``: required on every request when given; ``loopback_only``: answer only requests addressed
    to a loopback name (the server is bound to one); ``analysis``: the mirror file, or ``off``;
    ``thumbnails``: the thumbnail folder (default ``media.thumbnail_dir()``); ``memo``: keep the shipped
    queries' rows until the store changes; ``idle_close_s``: see ``AnalysisConnections``.
    """
    from capstore.serve import routes

    conns = AnalysisConnections(store, analysis, memo=memo) if idle_close_s is None else \
        AnalysisConnections(store, analysis, idle_close_s=idle_close_s, memo=memo)
    state = ServeState(store=store, connections=conns, thumbnails=Thumbnails(store, thumbnails),
                       templates=templates())
    app = Starlette(
        routes=[
            Route("/", routes.home),
            Route("/runs", routes.runs),
            Route("/runs.json", routes.runs_json),
            Route("/runs/{run_id}", routes.run),
            Route("/runs/{run_id}/status.json", routes.run_json),
            Route("/items/{item_id}", routes.item),
            Route("/compare", routes.compare),
            Route("/sql", routes.sql),
            Route("/sql.csv", routes.sql_csv),
            Route("/media/{sha}", routes.media),
            Route("/thumbs/{sha}", routes.thumb),
            Mount("/static", StaticFiles(directory=str(PACKAGE / "static")), name="static"),
        ],
        exception_handlers={
            NotFound: _error_handler(404),
            UnknownMedium: _error_handler(404),
            HTTPException: _http_error,
            StoreError: _error_handler(503),
            CapstoreError: _error_handler(400),
            Exception: _error_handler(500),
        },
        lifespan=_lifespan(conns),
    )
    app.state.serve = state

    async def denied(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        await error_page(state, Request(scope), status, message)(scope, receive, send)

    return Guard(app, token, loopback_only, denied)


def _lifespan(conns: AnalysisConnections):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        conns.close()  # let other processes sync the mirror once the server stops

    return lifespan


def error_page(state: ServeState, request: Request, status: int, message: str) -> Response:
    titles = {400: "Bad request", 401: "Token needed", 404: "Not found", 405: "Read-only",
              500: "Something went wrong", 503: "Store unavailable"}
    return state.templates.TemplateResponse(request, "error.html", {
        "status": status, "title": titles.get(status, "Error"), "message": message}, status_code=status)


def _error_handler(status: int):  # type: ignore[no-untyped-def]
    async def handle(request: Request, exc: Exception) -> Response:
        if status == 500:  # the traceback goes to the server's log, the page gets one line
            log.error("error serving %s", request.url.path, exc_info=exc)
            message = first_line(exc, 500, named=True)
        else:
            message = first_line(exc, 500)
        return error_page(request.app.state.serve, request, status, message)

    return handle


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = {404: f"no page at {request.url.path}",
               405: f"{request.method} is not allowed: this viewer only reads"}.get(status, str(exc.detail))
    return error_page(request.app.state.serve, request, status, message)


