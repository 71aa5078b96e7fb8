"""The friendly views: what a user queries instead of the physical schema.

Each view reads the physical tables through schema ``store`` (views over the analysis mirror, or over
the attached database, the same on SQLite and PostgreSQL), and the candidates', captions', references'
and iteration states' texts through schema ``derived`` (kept inline by the mirror, joined otherwise). Views stay plain joins and filters, so DuckDB pushes
a ``WHERE run_id = …`` down into the scan; timestamps are cast to UTC ``TIMESTAMP`` so both
databases give the same types. ``VIEWS`` is ordered: a view only uses views defined before it.

Prices (``costs``): device time is priced per device-hour by ``device_name``; a CPU without a rate
of its own takes the ``cpu`` row (seeded $0), any other device (a GPU) the ``*`` row. API usage
(``device_type = 'api'``) is priced per million tokens in and out and per image by the API model
name (the event's ``device_name``), ``*`` as fallback; API events have no device-hours.
"""

from __future__ import annotations

from capstore.metrics.names import TOKENIZER
from capstore.store.schema import CANDIDATE_METRIC_COLUMNS

RUN_NAME = "coalesce(r.label, r.method || ' #' || CAST(r.id AS VARCHAR))"


def mils_setting(path: str) -> str:
    """An integer MILS setting from the run's config JSON; NULL for other methods (their configs
    carry MILS defaults that mean nothing for them)."""
    return f"CASE WHEN r.method = 'mils' THEN TRY_CAST(json_extract_string(r.config, '$.{path}') AS INTEGER) END"


def _eval_values() -> str:
    """The typed candidate values (``candidate_eval_values``, one column per metric) as one row per
    (candidate, metric), with the candidate's run, item and iteration (kept beside the values by the
    mirror, joined otherwise: ``derived``)."""
    parts = [f"""
SELECT v.run_id, v.item_id, v.candidate_id, v.iteration, '{metric}' AS metric, v.{column} AS value,
       e.{column}_implementation AS implementation, e.id AS eval_id, CAST(e.created_at AS TIMESTAMP) AS created_at
FROM derived.candidate_eval_values v
JOIN store.candidate_evals e ON e.id = v.eval_id
WHERE v.{column} IS NOT NULL AND e.{column}_implementation IS NOT NULL""" for metric, column in CANDIDATE_METRIC_COLUMNS.items()]
    return "\nUNION ALL".join(parts)


EVAL_VALUES = _eval_values()

VIEWS: dict[str, str] = {
    "items": """
SELECT i.id AS item_id, d.name AS dataset, sp.name AS split, i.external_id AS item, i.image_sha,
       i.file_name, im.width, im.height, coalesce(im.kind, 'image') AS media_kind,
       im.duration_seconds AS duration, CAST(i.attributes AS VARCHAR) AS attributes
FROM store.items i
JOIN store.splits sp ON sp.id = i.split_id
JOIN store.datasets d ON d.id = sp.dataset_id
LEFT JOIN store.images im ON im.sha256 = i.image_sha""",
    "refs": """
SELECT rf.id AS reference_id, rf.item_id, d.name AS dataset, sp.name AS split, i.external_id AS item,
       rf.ordinal, rf.text, rf.external_id AS annotation_id, rf.text_sha,
       CAST(rf.attributes AS VARCHAR) AS attributes
FROM derived."references" rf
JOIN store.items i ON i.id = rf.item_id
JOIN store.splits sp ON sp.id = i.split_id
JOIN store.datasets d ON d.id = sp.dataset_id""",
    "runs": f"""
SELECT r.id AS run_id, {RUN_NAME} AS run_name, r.method, r.label, d.name AS dataset, sp.name AS split,
       coalesce(mk.modality, 'image') AS modality, r.status, coalesce(w.items, 0) AS items, coalesce(w.items_done, 0) AS items_done,
       coalesce(w.items_failed, 0) AS items_failed, coalesce(c.captions, 0) AS captions,
       r.seed, r.parent_run_id,
       {mils_setting('iterations')} AS iterations,
       {mils_setting('pool_size')} AS pool_size,
       {mils_setting('keep')} AS keep,
       {mils_setting('early_stop[0]')} AS early_stop_patience,
       json_extract_string(r.config, '$.scorer') AS scorer,
       json_extract_string(r.config, '$.generator') AS generator,
       json_extract_string(r.config, '$.captioner') AS captioner,
       r.config_hash, CAST(r.config AS VARCHAR) AS config, r.capstore_version,
       CAST(r.created_at AS TIMESTAMP) AS created_at, CAST(r.started_at AS TIMESTAMP) AS started_at,
       CAST(r.finished_at AS TIMESTAMP) AS finished_at,
       date_diff('millisecond', CAST(r.started_at AS TIMESTAMP), CAST(r.finished_at AS TIMESTAMP)) / 3.6e6
           AS wall_hours
FROM store.runs r
JOIN store.splits sp ON sp.id = r.split_id
JOIN store.datasets d ON d.id = sp.dataset_id
LEFT JOIN (SELECT run_id, count(*) AS items, count(*) FILTER (WHERE status = 'done') AS items_done,
                  count(*) FILTER (WHERE status = 'failed') AS items_failed
           FROM store.work_items GROUP BY run_id) w ON w.run_id = r.id
LEFT JOIN (SELECT run_id, count(*) AS captions FROM store.captions GROUP BY run_id) c ON c.run_id = r.id
LEFT JOIN (SELECT it.split_id, min(im.kind) AS modality FROM store.items it
           JOIN store.images im ON im.sha256 = it.image_sha GROUP BY it.split_id) mk ON mk.split_id = r.split_id""",
    "work": """
SELECT w.run_id, w.item_id, i.external_id AS item, w.status, w.attempts, w.iterations_done,
       w.stopped_early_at, w.lease_owner, CAST(w.updated_at AS TIMESTAMP) AS updated_at
FROM store.work_items w
JOIN store.items i ON i.id = w.item_id""",
    "candidates": """
SELECT c.id AS candidate_id, c.run_id, c.item_id, i.external_id AS item, c.iteration, c.text, c.origin,
       c.score, c.rank, c.text_sha
FROM derived.candidates c
JOIN store.items i ON i.id = c.item_id""",
    "captions": """
SELECT c.run_id, c.item_id, i.external_id AS item, c.text, c.score, c.iteration, c.text_sha,
       CAST(c.created_at AS TIMESTAMP) AS created_at
FROM derived.captions c
JOIN store.items i ON i.id = c.item_id""",
    "iterations": """
SELECT s.run_id, s.item_id, i.external_id AS item, s.iteration, s.best_text, s.best_score,
       s.best_text_sha, s.mean_kept_score, s.n_new, s.kept_count AS kept,
       CAST(s.created_at AS TIMESTAMP) AS created_at
FROM derived.iteration_states s
JOIN store.items i ON i.id = s.item_id""",
    "candidate_values": f"""
SELECT cv.run_id, cv.item_id, i.external_id AS item, cv.candidate_id, cv.iteration, cv.metric, cv.value,
       cv.implementation, cv.eval_id, cv.created_at
FROM ({EVAL_VALUES}
UNION ALL
SELECT m.run_id, c.item_id, m.candidate_id, c.iteration, m.metric, m.value, m.implementation,
       CAST(NULL AS BIGINT) AS eval_id, CAST(m.created_at AS TIMESTAMP) AS created_at
FROM store.metric_values m
JOIN store.candidates c ON c.id = m.candidate_id
WHERE m.scope = 'candidate') cv
JOIN store.items i ON i.id = cv.item_id""",
    "metrics": f"""
SELECT m.id AS metric_id, m.run_id, {RUN_NAME} AS run_name, r.method, r.label, m.metric, m.scope,
       m.subject, m.item_id, i.external_id AS item, m.candidate_id, m.value, m.implementation,
       CAST(m.created_at AS TIMESTAMP) AS created_at
FROM store.metric_values m
JOIN store.runs r ON r.id = m.run_id
LEFT JOIN store.items i ON i.id = m.item_id
UNION ALL
SELECT CAST(NULL AS BIGINT) AS metric_id, cv.run_id, {RUN_NAME} AS run_name, r.method, r.label, cv.metric,
       'candidate' AS scope, 'candidate:' || CAST(cv.candidate_id AS VARCHAR) AS subject, cv.item_id,
       i.external_id AS item, cv.candidate_id, cv.value, cv.implementation, cv.created_at
FROM ({EVAL_VALUES}) cv
JOIN store.runs r ON r.id = cv.run_id
JOIN store.items i ON i.id = cv.item_id""",
    "errors": """
SELECT e.id AS error_id, e.run_id, e.item_id, i.external_id AS item, e.stage, e.kind, e.message, e.attempt,
       CAST(e.created_at AS TIMESTAMP) AS created_at
FROM store.errors e
LEFT JOIN store.items i ON i.id = e.item_id""",
    "models": """
SELECT id AS model_id, kind, backend, name, fingerprint, weights_sha, CAST(config AS VARCHAR) AS config,
       CAST(created_at AS TIMESTAMP) AS created_at
FROM store.models""",
    "prices": """
SELECT kind, key, usd, source, CAST(updated_at AS TIMESTAMP) AS updated_at FROM store.prices""",
    "usage": """
SELECT u.id AS event_id, u.run_id, u.stage, u.model_id, m.name AS model, m.kind AS model_kind,
       m.backend, u.device_type, u.device_name, u.device_seconds, u.wall_seconds, u.tokens_in,
       u.tokens_out, u.images, u.items, u.calls, u.cached, u.worker, CAST(u.created_at AS TIMESTAMP) AS created_at
FROM store.usage_events u
LEFT JOIN store.models m ON m.id = u.model_id""",
    "costs": """
SELECT r.*, r.device_seconds / 3600.0 * r.device_hour_usd AS device_usd,
       (r.tokens_in * r.tokens_in_1m_usd + r.tokens_out * r.tokens_out_1m_usd) / 1e6 AS tokens_usd,
       r.images * r.image_usd AS images_usd,
       r.device_seconds / 3600.0 * r.device_hour_usd
         + (r.tokens_in * r.tokens_in_1m_usd + r.tokens_out * r.tokens_out_1m_usd) / 1e6
         + r.images * r.image_usd AS usd
FROM (
    SELECT u.*, u.device_seconds / 3600.0 AS device_hours,
           CASE WHEN u.device_type = 'api' THEN 0.0
                WHEN dn.usd IS NOT NULL THEN dn.usd
                WHEN u.device_type = 'cpu' THEN coalesce(dc.usd, 0.0)
                ELSE coalesce(ds.usd, 0.0) END AS device_hour_usd,
           CASE WHEN u.device_type = 'api' THEN coalesce(ti.usd, tis.usd, 0.0) ELSE 0.0 END AS tokens_in_1m_usd,
           CASE WHEN u.device_type = 'api' THEN coalesce(tou.usd, tos.usd, 0.0) ELSE 0.0 END AS tokens_out_1m_usd,
           CASE WHEN u.device_type = 'api' THEN coalesce(im.usd, ims.usd, 0.0) ELSE 0.0 END AS image_usd
    FROM usage u
    LEFT JOIN store.prices dn ON dn.kind = 'device_hour' AND dn.key = u.device_name
    LEFT JOIN store.prices dc ON dc.kind = 'device_hour' AND dc.key = 'cpu'
    LEFT JOIN store.prices ds ON ds.kind = 'device_hour' AND ds.key = '*'
    LEFT JOIN store.prices ti ON ti.kind = 'tokens_in_1m' AND ti.key = u.device_name
    LEFT JOIN store.prices tis ON tis.kind = 'tokens_in_1m' AND tis.key = '*'
    LEFT JOIN store.prices tou ON tou.kind = 'tokens_out_1m' AND tou.key = u.device_name
    LEFT JOIN store.prices tos ON tos.kind = 'tokens_out_1m' AND tos.key = '*'
    LEFT JOIN store.prices im ON im.kind = 'image' AND im.key = u.device_name
    LEFT JOIN store.prices ims ON ims.kind = 'image' AND ims.key = '*'
) r""",
    "text_tokens": f"""
SELECT text_sha, ptb, token_ids FROM derived.text_tokens WHERE tokenizer = '{TOKENIZER}'""",
    "run_costs": """
SELECT r.run_id, r.run_name, r.method, count(c.event_id) AS events,
       sum(c.device_seconds) AS device_seconds, sum(c.device_hours) AS device_hours,
       sum(c.device_hours) FILTER (WHERE c.device_type NOT IN ('cpu', 'api')) AS gpu_hours,
       sum(c.wall_seconds) AS wall_seconds, CAST(sum(c.tokens_in) AS BIGINT) AS tokens_in,
       CAST(sum(c.tokens_out) AS BIGINT) AS tokens_out, CAST(sum(c.images) AS BIGINT) AS images,
       CAST(sum(c.calls) AS BIGINT) AS calls, CAST(sum(c.cached) AS BIGINT) AS cached,
       sum(c.device_usd) AS device_usd, sum(c.tokens_usd) AS tokens_usd, sum(c.images_usd) AS images_usd,
       sum(c.usd) AS usd
FROM runs r
LEFT JOIN costs c ON c.run_id = r.run_id
GROUP BY r.run_id, r.run_name, r.method""",
}

# What each view is, for `capstore sql --views` and the README.
VIEW_DOCS: dict[str, str] = {
    "runs": "one row per run: method, label, dataset, split, modality, status, item counts, MILS settings, times",
    "items": "items of every split: dataset, split, external id, medium (image, video, audio) and attributes (JSON)",
    "refs": "reference captions (text, text_sha) of every item, with their attributes (JSON)",
    "work": "work items: status, attempts, iterations done, where early stopping ended an item",
    "candidates": "every candidate: run, item, iteration, text, origin, score, rank",
    "captions": "the final caption of each item of a run: text, score, iteration",
    "iterations": "MILS iteration states: best text and score, mean kept score, new candidates",
    "candidate_values": "candidate-scope metric values (BLEU-4, CIDEr-D…): run, item, candidate, iteration, metric, value",
    "metrics": "metric values (corpus, item, candidate scope) with run, method and implementation "
               "(metric_id: NULL for the typed candidate values)",
    "errors": "failed attempts: stage, kind, message",
    "models": "models by fingerprint: kind, backend, name",
    "prices": "the price table",
    "usage": "usage events with their model's name: device-seconds, tokens, images, calls, cache hits",
    "costs": "usage events priced: rates applied and dollars (device, tokens, images, total)",
    "run_costs": "costs summed per run: device-hours, GPU-hours, tokens, images, dollars",
    "text_tokens": "PTB tokens of each text `capstore eval` has tokenized: ptb (the tokenized text), token_ids",
}
