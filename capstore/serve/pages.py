"""What each page shows, read from the friendly DuckDB views (and the shipped ``sql/`` queries).

Every function takes a ``Reader`` (a cursor of ``AnalysisConnections``) and returns plain data for a
template; none reads a whole big table into Python: grids are paged in SQL (``LIMIT``/``OFFSET``),
and per-item lookups filter on ids that the mirror's columns skip to. A run, item or page that does
not exist raises ``NotFound`` (the app answers 404).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Sequence

from capstore.serve.connections import Reader

GRID_PAGE = 48  # thumbnails per page of a run's grid
COMPARE_PAGE = 40  # items per page of a comparison
ERRORS_SHOWN = 20
GRID_METRICS = ("CIDEr", "CLIPScore")  # shown under each thumbnail when the run has them
MAX_ID = 2**63 - 1


class NotFound(Exception):
    """The URL names something the store does not hold (or no number where a number belongs)."""


def parse_id(value: str | int | None, what: str) -> int:
    """A positive 64-bit id from a URL part, else NotFound."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise NotFound(f"{what} {value!r} is not a number") from None
    if not 1 <= number <= MAX_ID:
        raise NotFound(f"no {what} {value}")
    return number


def parse_page(value: str | None) -> int:
    """A 1-based page number from ``?page=`` (missing: 1)."""
    if value in (None, ""):
        return 1
    return parse_id(value, "page")


# -- Runs -----------------------------------------------------------------------------------------

RUN_SORTS = ("run_id", "run", "method", "dataset", "status", "progress", "bleu_4", "meteor", "rouge_l", "cider",
             "spice", "clipscore", "dollars", "hours", "created_at")


def runs_page(db: Reader, sort: str | None = None, descending: bool = False) -> list[dict[str, Any]]:
    """Every run: status and progress (the ``runs`` view) beside its metrics and cost (``metrics_by_run.sql``)."""
    runs = db.rows("""
        SELECT run_id, run_name AS run, method, label, dataset, split, modality, status, items, items_done,
               items_failed, captions, parent_run_id, iterations, scorer, generator, captioner,
               created_at, started_at, finished_at, wall_hours
        FROM runs ORDER BY run_id""")
    table = {r["run_id"]: r for r in db.shipped("metrics_by_run")}
    for run in runs:
        extra = table.get(run["run_id"], {})
        for key in ("bleu_4", "meteor", "rouge_l", "cider", "spice", "clipscore", "dollars", "hours"):
            run[key] = extra.get(key)
        run["progress"] = run["items_done"] / run["items"] if run["items"] else None
    key = sort if sort in RUN_SORTS else "run_id"
    present = [r for r in runs if r.get(key) is not None]
    absent = [r for r in runs if r.get(key) is None]
    present.sort(key=lambda r: (_sortable(r[key]), r["run_id"]), reverse=descending)
    return present + absent  # runs without the value last, whichever the direction


def _sortable(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# -- Run ------------------------------------------------------------------------------------------


@dataclass
class GridItem:
    item_id: int
    item: str
    image_sha: str | None
    media_kind: str
    status: str
    caption: str | None
    score: float | None
    iteration: int | None
    metrics: dict[str, float | None]


@dataclass
class RunPage:
    run: dict[str, Any]
    config: str
    corpus: list[dict[str, Any]]
    cost: dict[str, Any] | None
    cost_by_stage: list[dict[str, Any]]
    curve: list[dict[str, Any]]
    quality_vs_cost: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    error_kinds: list[dict[str, Any]]
    error_count: int
    item_metrics: list[str]
    grid: list[GridItem]
    grid_total: int
    sort_metric: str | None
    order: str
    page: int
    pages: int


def find_run(db: Reader, run_id: int) -> dict[str, Any]:
    """The ``runs`` view's row of ``run_id``; NotFound if there is none."""
    found = db.rows("SELECT * FROM runs WHERE run_id = $run", {"run": run_id})
    if not found:
        raise NotFound(f"no run {run_id} in this store")
    return found[0]


def run_page(db: Reader, run_id: int, sort: str | None, order: str, page: int) -> RunPage:
    """A run: configuration, corpus metrics, cost by stage, MILS curve, errors and one page of its items.

    ``sort``: an item-scope metric (default CIDEr when the run has it, else the scorer's score);
    ``order``: ``worst`` (ascending) or ``best``; ``item`` sorts by item id.
    """
    run = find_run(db, run_id)
    params = {"run": run_id}
    corpus = db.rows("""
        SELECT metric, arg_max(value, metric_id) AS value, arg_max(implementation, metric_id) AS implementation
        FROM metrics WHERE run_id = $run AND scope = 'corpus' GROUP BY metric ORDER BY metric""", params)
    cost = db.shipped("cost_by_run", runs=[run_id])
    by_stage = db.shipped("cost_by_stage", runs=[run_id])
    curve = db.shipped("iteration_curve", runs=[run_id]) if run["method"] == "mils" else []
    quality = db.shipped("quality_vs_cost")
    errors = db.rows(f"""
        SELECT error_id, item_id, item, stage, kind, message, attempt, created_at FROM errors
        WHERE run_id = $run ORDER BY error_id DESC LIMIT {ERRORS_SHOWN}""", params)
    kinds = db.rows("""
        SELECT stage, kind, count(*) AS n, count(DISTINCT item_id) AS items, arg_max(message, error_id) AS last_message
        FROM errors WHERE run_id = $run GROUP BY stage, kind ORDER BY n DESC, stage, kind""", params)
    item_metrics = [r["metric"] for r in db.rows("""
        SELECT DISTINCT metric FROM store.metric_values WHERE run_id = $run AND scope = 'item' ORDER BY metric""",
        params)]
    sort_metric, order = _grid_order(sort, order, item_metrics)
    total = db.rows("SELECT count(*) AS n FROM store.work_items WHERE run_id = $run", params)[0]["n"]
    pages = max(1, math.ceil(total / GRID_PAGE))
    if page > pages:
        raise NotFound(f"run {run_id} has {pages} page(s) of items, not {page}")
    grid = _grid(db, run_id, sort_metric, order, item_metrics, page)
    return RunPage(run=run, config=_pretty_json(run.get("config")), corpus=corpus, cost=cost[0] if cost else None,
                   cost_by_stage=by_stage, curve=curve, quality_vs_cost=quality, errors=errors, error_kinds=kinds,
                   error_count=sum(k["n"] for k in kinds), item_metrics=item_metrics, grid=grid, grid_total=total,
                   sort_metric=sort_metric, order=order, page=page, pages=pages)


def _grid_order(sort: str | None, order: str, item_metrics: list[str]) -> tuple[str | None, str]:
    """The metric to sort the grid by (None: the scorer's score) and the direction."""
    order = order if order in ("worst", "best", "item") else "worst"
    if sort == "score":
        return None, order
    if sort in item_metrics:
        return sort, order
    default = next((m for m in GRID_METRICS if m in item_metrics), None)
    return default, order


def _grid(db: Reader, run_id: int, sort_metric: str | None, order: str,
          item_metrics: list[str], page: int) -> list[GridItem]:
    shown = [m for m in GRID_METRICS if m in item_metrics]
    if sort_metric and sort_metric not in shown:
        shown.append(sort_metric)
    pivot = "".join(f", arg_max(value, metric_id) FILTER (WHERE metric = {_literal(m)}) AS {_metric_col(m)}"
                    for m in shown)
    metrics_cte = (f"m AS (SELECT item_id{pivot} FROM metrics WHERE run_id = $run AND scope = 'item' "
                   f"AND metric IN ({', '.join(_literal(m) for m in shown)}) GROUP BY item_id)") if shown else \
        "m AS (SELECT NULL::BIGINT AS item_id WHERE false)"
    key = "w.item_id" if order == "item" else (f"m.{_metric_col(sort_metric)}" if sort_metric else "c.score")
    direction = "DESC" if order == "best" else "ASC"
    columns = "".join(f", m.{_metric_col(m)}" for m in shown)
    found = db.rows(f"""
        WITH {metrics_cte}
        SELECT w.item_id, i.item, i.image_sha, i.media_kind, w.status, c.text AS caption, c.score, c.iteration{columns}
        FROM work w
        JOIN items i ON i.item_id = w.item_id
        LEFT JOIN captions c ON c.run_id = w.run_id AND c.item_id = w.item_id
        LEFT JOIN m ON m.item_id = w.item_id
        WHERE w.run_id = $run
        ORDER BY {key} {direction} NULLS LAST, w.item_id
        LIMIT {GRID_PAGE} OFFSET {(page - 1) * GRID_PAGE}""", {"run": run_id})
    return [GridItem(item_id=r["item_id"], item=r["item"], image_sha=r["image_sha"], media_kind=r["media_kind"],
                     status=r["status"], caption=r["caption"], score=r["score"], iteration=r["iteration"],
                     metrics={m: r[_metric_col(m)] for m in shown}) for r in found]


# -- Item -----------------------------------------------------------------------------------------


@dataclass
class Tried:
    """A candidate of one MILS step: what the generator (or the pool) offered and how it scored."""

    text: str
    score: float | None
    rank: int | None
    origin: str
    kept: bool
    metric: float | None


@dataclass
class Kept:
    """A candidate in the kept set after an iteration (the prompt of the next one)."""

    text: str
    score: float
    new: bool  # entered the kept set at this iteration
    first_iteration: int | None
    origin: str | None
    final: bool  # the run's caption


@dataclass
class Step:
    iteration: int
    best_text: str | None
    best_score: float | None
    mean_kept_score: float | None
    n_new: int
    kept: list[Kept]
    tried: list[Tried]
    new_kept: int  # how many of this iteration's candidates made it into the kept set


@dataclass
class Trajectory:
    run_id: int
    run_name: str
    steps: list[Step]
    caption: str | None
    caption_first_iteration: int | None
    caption_origin: str | None
    candidate_metric: str | None


@dataclass
class ItemPage:
    item: dict[str, Any]
    attributes: dict[str, Any]
    references: list[dict[str, Any]]
    captions: list[dict[str, Any]]
    metric_names: list[str]
    mils_runs: list[dict[str, Any]]
    trajectory: Trajectory | None


def item_page(db: Reader, item_id: int, run_id: int | None) -> ItemPage:
    """An item: its medium, references, every run's caption and per-image metrics, and the trajectory of
    one MILS run (``run_id``, default the first MILS run that worked on it)."""
    params = {"item": item_id}
    found = db.rows("SELECT * FROM items WHERE item_id = $item", params)
    if not found:
        raise NotFound(f"no item {item_id} in this store")
    item = found[0]
    refs = db.rows("SELECT ordinal, text, annotation_id FROM refs WHERE item_id = $item ORDER BY ordinal", params)
    captions = db.rows("""
        SELECT c.run_id, coalesce(r.label, r.method || ' #' || CAST(r.id AS VARCHAR)) AS run, r.method,
               c.text, c.score, c.iteration
        FROM captions c JOIN store.runs r ON r.id = c.run_id
        WHERE c.item_id = $item ORDER BY c.run_id""", params)
    metrics = db.rows("""
        SELECT run_id, metric, arg_max(value, id) AS value FROM store.metric_values
        WHERE item_id = $item AND scope = 'item' GROUP BY run_id, metric""", params)
    by_run: dict[int, dict[str, float]] = {}
    for m in metrics:
        by_run.setdefault(m["run_id"], {})[m["metric"]] = m["value"]
    for c in captions:
        c["metrics"] = by_run.get(c["run_id"], {})
    names = sorted({m["metric"] for m in metrics}, key=_metric_order)
    mils = db.rows("""
        SELECT r.id AS run_id, coalesce(r.label, r.method || ' #' || CAST(r.id AS VARCHAR)) AS run
        FROM store.runs r JOIN store.work_items w ON w.run_id = r.id
        WHERE w.item_id = $item AND r.method = 'mils' ORDER BY r.id""", params)
    if run_id is not None and run_id not in {m["run_id"] for m in mils}:
        raise NotFound(f"run {run_id} is no MILS run of item {item_id}")
    chosen = run_id if run_id is not None else (mils[0]["run_id"] if mils else None)
    trajectory = None
    if chosen is not None:
        name = next(m["run"] for m in mils if m["run_id"] == chosen)
        trajectory = _trajectory(db, chosen, name, item_id)
    attributes = json.loads(item["attributes"]) if item.get("attributes") else {}
    return ItemPage(item=item, attributes=attributes if isinstance(attributes, dict) else {"value": attributes},
                    references=refs, captions=captions, metric_names=names, mils_runs=mils, trajectory=trajectory)


def _trajectory(db: Reader, run_id: int, run_name: str, item_id: int) -> Trajectory:
    params = {"run": run_id, "item": item_id}
    states = db.rows("""
        SELECT iteration, best_text, best_score, mean_kept_score, n_new FROM iterations
        WHERE run_id = $run AND item_id = $item ORDER BY iteration""", params)
    kept_json = {r["iteration"]: r["kept"] for r in db.rows("""
        SELECT iteration, CAST(kept AS VARCHAR) AS kept FROM store.iteration_states
        WHERE run_id = $run AND item_id = $item""", params)}
    candidates = db.rows("""
        SELECT candidate_id, iteration, text, origin, score, rank, text_sha FROM candidates
        WHERE run_id = $run AND item_id = $item ORDER BY iteration, rank NULLS LAST, candidate_id""", params)
    metric_rows = db.rows("""
        SELECT metric, candidate_id, arg_max(value, created_at) AS value FROM candidate_values
        WHERE run_id = $run AND item_id = $item AND metric IN ('CIDEr', 'Bleu_4')
        GROUP BY metric, candidate_id""", params)
    metric_name = "CIDEr" if any(m["metric"] == "CIDEr" for m in metric_rows) else (
        "Bleu_4" if metric_rows else None)
    cand_metric = {m["candidate_id"]: m["value"] for m in metric_rows if m["metric"] == metric_name}
    caption = db.rows("SELECT text, text_sha FROM captions WHERE run_id = $run AND item_id = $item", params)
    caption_sha = caption[0]["text_sha"] if caption else None
    text_of: dict[str, str] = {}
    first: dict[str, tuple[int, str]] = {}
    for c in candidates:
        text_of.setdefault(c["text_sha"], c["text"])
        first.setdefault(c["text_sha"], (c["iteration"], c["origin"]))
    steps = []
    for s in states:
        kept_pairs = _kept_pairs(kept_json.get(s["iteration"]))
        kept_shas = {sha for sha, _ in kept_pairs}
        kept = [Kept(text=text_of.get(sha, sha[:12]), score=score, new=first.get(sha, (None,))[0] == s["iteration"],
                     first_iteration=first.get(sha, (None, None))[0], origin=first.get(sha, (None, None))[1],
                     final=sha == caption_sha) for sha, score in kept_pairs]
        tried = [Tried(text=c["text"], score=c["score"], rank=c["rank"], origin=c["origin"],
                       kept=c["text_sha"] in kept_shas, metric=cand_metric.get(c["candidate_id"]))
                 for c in candidates if c["iteration"] == s["iteration"]]
        steps.append(Step(iteration=s["iteration"], best_text=s["best_text"], best_score=s["best_score"],
                          mean_kept_score=s["mean_kept_score"], n_new=s["n_new"], kept=kept, tried=tried,
                          new_kept=sum(1 for k in kept if k.new)))
    where = first.get(caption_sha) if caption_sha else None
    return Trajectory(run_id=run_id, run_name=run_name, steps=steps, caption=caption[0]["text"] if caption else None,
                      caption_first_iteration=where[0] if where else None, caption_origin=where[1] if where else None,
                      candidate_metric=metric_name)


def _kept_pairs(raw: Any) -> list[tuple[str, float]]:
    """An iteration state's ``kept`` JSON (``[[text sha, score], …]``, best first) as pairs."""
    if raw is None:
        return []
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
        return [(str(sha), float(score)) for sha, score in value]
    except (ValueError, TypeError):
        return []


# -- Compare --------------------------------------------------------------------------------------


@dataclass
class CompareRow:
    item_id: int
    item: str
    image_sha: str | None
    media_kind: str
    captions: dict[int, str | None]
    values: dict[int, float | None]
    delta: float | None


@dataclass
class ComparePage:
    runs: list[dict[str, Any]]
    table: list[dict[str, Any]]
    metric: str | None
    metrics: list[str]
    rows: list[CompareRow]
    total: int
    summary: dict[str, Any]
    order: str
    page: int
    pages: int


def compare_page(db: Reader, run_ids: Sequence[int], metric: str | None, order: str,
                 page: int) -> ComparePage:
    """Two or more runs side by side: the metrics-and-cost table, then per item each run's caption and
    metric, with the second run's delta over the first (``order``: ``worst`` first, ``best`` first, or ``item``)."""
    runs = [find_run(db, r) for r in run_ids]
    ids = [r["run_id"] for r in runs]
    table = db.shipped("metrics_by_run", runs=ids)
    metrics = [r["metric"] for r in db.rows("""
        SELECT metric FROM store.metric_values WHERE list_contains($runs, run_id) AND scope = 'item'
        GROUP BY metric HAVING count(DISTINCT run_id) = len($runs) ORDER BY metric""", {"runs": ids})]
    metric = metric if metric in metrics else next((m for m in GRID_METRICS if m in metrics), metrics[0] if metrics else None)
    order = order if order in ("worst", "best", "item") else "worst"
    a, b = ids[0], ids[1]
    params: dict[str, Any] = {"runs": ids, "a": a, "b": b, "metric": metric or ""}
    base = """
        WITH m AS (SELECT run_id, item_id, arg_max(value, metric_id) AS value FROM metrics
                   WHERE list_contains($runs, run_id) AND scope = 'item' AND metric = $metric
                   GROUP BY run_id, item_id),
        pairs AS (SELECT coalesce(ca.item_id, cb.item_id) AS item_id, ma.value AS va, mb.value AS vb
                  FROM (SELECT item_id FROM captions WHERE run_id = $a) ca
                  FULL JOIN (SELECT item_id FROM captions WHERE run_id = $b) cb ON cb.item_id = ca.item_id
                  LEFT JOIN m ma ON ma.run_id = $a AND ma.item_id = coalesce(ca.item_id, cb.item_id)
                  LEFT JOIN m mb ON mb.run_id = $b AND mb.item_id = coalesce(ca.item_id, cb.item_id))"""
    summary = db.rows(base + """
        SELECT count(*) AS n_items, count(vb - va) AS compared, avg(vb - va) AS mean_delta,
               count(*) FILTER (WHERE vb > va) AS better, count(*) FILTER (WHERE vb < va) AS worse,
               count(*) FILTER (WHERE vb = va) AS equal FROM pairs""", params)[0]
    total = summary["n_items"]
    pages = max(1, math.ceil(total / COMPARE_PAGE))
    if page > pages:
        raise NotFound(f"this comparison has {pages} page(s) of items, not {page}")
    key = "p.item_id" if order == "item" or metric is None else "p.vb - p.va"
    direction = "DESC" if order == "best" else "ASC"
    found = db.rows(base + f"""
        SELECT p.item_id, i.item, i.image_sha, i.media_kind, p.va, p.vb, p.vb - p.va AS delta
        FROM pairs p JOIN items i ON i.item_id = p.item_id
        ORDER BY {key} {direction} NULLS LAST, p.item_id
        LIMIT {COMPARE_PAGE} OFFSET {(page - 1) * COMPARE_PAGE}""", params)
    item_ids = [r["item_id"] for r in found]
    texts: dict[tuple[int, int], str] = {}
    values: dict[tuple[int, int], float] = {}
    if item_ids:
        for c in db.rows("SELECT run_id, item_id, text FROM captions WHERE list_contains($runs, run_id) "
                           "AND list_contains($items, item_id)", {"runs": ids, "items": item_ids}):
            texts[(c["run_id"], c["item_id"])] = c["text"]
        if metric:
            for v in db.rows("SELECT run_id, item_id, arg_max(value, metric_id) AS value FROM metrics "
                               "WHERE list_contains($runs, run_id) AND list_contains($items, item_id) "
                               "AND scope = 'item' AND metric = $metric GROUP BY run_id, item_id",
                          {"runs": ids, "items": item_ids, "metric": metric}):
                values[(v["run_id"], v["item_id"])] = v["value"]
    out = [CompareRow(item_id=r["item_id"], item=r["item"], image_sha=r["image_sha"], media_kind=r["media_kind"],
                      captions={rid: texts.get((rid, r["item_id"])) for rid in ids},
                      values={rid: values.get((rid, r["item_id"])) for rid in ids}, delta=r["delta"])
           for r in found]
    return ComparePage(runs=runs, table=table, metric=metric, metrics=metrics, rows=out, total=total,
                       summary=summary, order=order, page=page, pages=pages)


# -- helpers --------------------------------------------------------------------------------------


def _metric_col(metric: str) -> str:
    return "m_" + "".join(ch if ch.isalnum() else "_" for ch in metric.lower())


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _metric_order(name: str) -> tuple[int, str]:
    order = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE", "CLIPScore", "RefCLIPScore")
    return (order.index(name) if name in order else len(order), name)


def _pretty_json(raw: Any) -> str:
    if raw is None:
        return ""
    try:
        return json.dumps(json.loads(raw) if isinstance(raw, str) else raw, indent=2, sort_keys=True)
    except (TypeError, ValueError):
        return str(raw)
