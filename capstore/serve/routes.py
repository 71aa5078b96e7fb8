"""The endpoints: read the URL, ask ``pages`` (or ``media``, ``sql_page``) and render a template.

Endpoints are plain functions, which Starlette runs in its thread pool; each page reads through one
cursor of the shared analysis connection. Progress (``*.json``, polled by the pages of running runs)
is read from the store itself with ``capstore.runs.status``, so a poll does not sync the mirror.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from capstore.errors import InputError
from capstore.serve import pages
from capstore.serve.app import ServeState
from capstore.serve.media import CACHE_CONTROL, check_sha, read_medium
from capstore.serve.plots import item_plot, quality_plot, run_plots

LIVE_STATUSES = ("pending", "running")


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    state = _state(request)
    context = {**context, "mirror_note": state.connections.note}
    return state.templates.TemplateResponse(request, template, context, status_code=status)


def home(request: Request) -> Response:
    return RedirectResponse("/runs", status_code=302)


def runs(request: Request) -> Response:
    sort = request.query_params.get("sort")
    descending = request.query_params.get("dir") == "desc"
    with _state(request).connections.reader() as db:
        found = pages.runs_page(db, sort, descending)
        quality = db.shipped("quality_vs_cost")
    live = any(r["status"] in LIVE_STATUSES for r in found)
    return _render(request, "runs.html", {"runs": found, "sort": sort or "run_id", "descending": descending,
                                          "live": live, "plot": quality_plot(quality)})


def runs_json(request: Request) -> Response:
    """Every run's status and progress, straight from the store (what the runs page polls)."""
    from capstore.runs.status import list_runs

    out = [{"run_id": r[0], "status": r[3], "items_done": r[5], "items": r[6]} for r in list_runs(_state(request).store)]
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


def run(request: Request) -> Response:
    run_id = pages.parse_id(request.path_params["run_id"], "run")
    q = request.query_params
    page = pages.parse_page(q.get("page"))
    with _state(request).connections.reader() as db:
        data = pages.run_page(db, run_id, q.get("sort"), q.get("order", "worst"), page)
    status = _run_status(request, run_id)
    return _render(request, "run.html", {"p": data, "status": status, "plots": run_plots(data),
                                         "live": data.run["status"] in LIVE_STATUSES})


def run_json(request: Request) -> Response:
    """One run's progress and ETA from the store (what the run page polls while it runs)."""
    run_id = pages.parse_id(request.path_params["run_id"], "run")
    status = _run_status(request, run_id)
    return JSONResponse({"run_id": run_id, "status": status.status, "items": status.items,
                         "items_done": status.items.get("done", 0), "items_total": sum(status.items.values()),
                         "eta_seconds": status.eta_seconds, "errors": status.errors, "workers": status.workers},
                        headers={"Cache-Control": "no-store"})


def _run_status(request: Request, run_id: int):  # -> RunStatus
    from capstore.runs.status import run_status

    try:
        return run_status(_state(request).store, run_id)
    except InputError as exc:  # no such run
        raise pages.NotFound(str(exc)) from exc


def item(request: Request) -> Response:
    item_id = pages.parse_id(request.path_params["item_id"], "item")
    run_param = request.query_params.get("run")
    run_id = pages.parse_id(run_param, "run") if run_param else None
    with _state(request).connections.reader() as db:
        data = pages.item_page(db, item_id, run_id)
    return _render(request, "item.html", {"p": data, "plot": item_plot(data.trajectory)})


def compare(request: Request) -> Response:
    q = request.query_params
    given = [part for value in q.getlist("runs") for part in value.replace(" ", ",").split(",") if part]
    run_ids = list(dict.fromkeys(pages.parse_id(r, "run") for r in given))
    if len(run_ids) < 2:
        raise InputError("pick two or more runs to compare (on the runs page, or ?runs=1,2)")
    page = pages.parse_page(q.get("page"))
    with _state(request).connections.reader() as db:
        data = pages.compare_page(db, run_ids, q.get("metric"), q.get("order", "worst"), page)
    return _render(request, "compare.html", {"p": data, "runs_param": ",".join(map(str, run_ids))})


def sql(request: Request) -> Response:
    from capstore.analysis.queries import list_queries
    from capstore.serve import sql_page

    shipped = list_queries()
    context: dict[str, Any] = {"shipped": shipped, "answer": None, "error": None}
    try:
        form = sql_page.read_form(request.query_params)
    except InputError as exc:
        form = sql_page.SqlForm()
        context["error"] = sql_page.error_text(exc)
    context["form"] = form
    if form.sql.strip() and context["error"] is None:
        try:
            context["answer"] = sql_page.answer(sql_page.run_form(_state(request).connections, form))
        except InputError as exc:
            context["error"] = sql_page.error_text(exc)
    return _render(request, "sql.html", context, status=400 if context["error"] else 200)


def sql_csv(request: Request) -> Response:
    from capstore.serve import sql_page

    form = sql_page.read_form(request.query_params)
    if not form.sql.strip():
        raise InputError("no statement: give ?q=SELECT… or ?query=NAME")
    result = sql_page.run_form(_state(request).connections, form, all_rows=True)
    name = form.query_name if form.query_name and re.fullmatch(r"[\w.-]{1,80}", form.query_name) else "query"
    return PlainTextResponse(sql_page.as_csv(result), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def media(request: Request) -> Response:
    sha = check_sha(request.path_params["sha"])
    if _fresh(request, sha):
        return Response(status_code=304, headers=_cache_headers(sha))
    found = read_medium(_state(request).store, sha)
    if found.path is not None:
        return FileResponse(found.path, media_type=found.content_type, headers=_cache_headers(sha),
                            content_disposition_type="inline")
    return Response(found.data, media_type=found.content_type, headers=_cache_headers(sha))


def thumb(request: Request) -> Response:
    sha = check_sha(request.path_params["sha"])
    if _fresh(request, sha):
        return Response(status_code=304, headers=_cache_headers(sha, "t"))
    path = _state(request).thumbnails.get(sha)
    return FileResponse(path, media_type="image/jpeg", headers=_cache_headers(sha, "t"),
                        content_disposition_type="inline")


def _cache_headers(sha: str, variant: str = "") -> dict[str, str]:
    return {"Cache-Control": CACHE_CONTROL, "ETag": f'"{variant}{sha}"'}


def _fresh(request: Request, sha: str) -> bool:
    """Whether the browser's copy (If-None-Match) is this sha's: content-addressed, so it cannot be stale.
    Checked after the sha is known to be well-formed, and only for shas the store holds (below)."""
    tags = request.headers.get("if-none-match", "")
    if not tags:
        return False
    wanted = {t.strip().removeprefix("W/").strip('"') for t in tags.split(",")}
    if not (sha in wanted or f"t{sha}" in wanted):
        return False
    from capstore.serve.media import medium_kind

    medium_kind(_state(request).store, sha)  # UnknownMedium (404) for a sha this store does not hold
    return True
