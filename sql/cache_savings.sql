-- Duplicates avoided by the caches: requests served from the embedding and generation caches.
-- One row per (run, stage): requests (distinct texts, images or prompts asked for), how many were
-- served from a cache and how many computed, the hit rate, model calls made, device-seconds
-- spent, and an estimate of the device-seconds the hits saved (at this row's seconds per
-- computed request; NULL when nothing was computed).
-- A row with run_id NULL is work done outside any run (CLIPScore scoring by `capstore eval`);
-- it shows only when no runs are named.
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
SELECT run_id,
       stage,
       CAST(sum(items) AS BIGINT) AS requests,
       CAST(sum(cached) AS BIGINT) AS cached,
       CAST(sum(items) - sum(cached) AS BIGINT) AS computed,
       sum(cached) / nullif(sum(items), 0) AS hit_rate,
       CAST(sum(calls) AS BIGINT) AS calls,
       sum(device_seconds) AS device_seconds,
       sum(cached) * sum(device_seconds) / nullif(sum(items) - sum(cached), 0) AS est_device_seconds_saved
FROM usage
WHERE $runs IS NULL OR list_contains($runs, run_id)
GROUP BY run_id, stage
ORDER BY run_id, stage
