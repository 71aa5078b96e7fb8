-- Where a run's cost goes: device time, tokens and dollars by stage, model and device.
-- One row per (run, stage, model, device): device-hours, the hourly rate applied, tokens, images,
-- dollars, requests computed and requests served from the caches.
-- A row with run_id NULL is work done outside any run (CLIPScore scoring by `capstore eval`);
-- it shows only when no runs are named.
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
SELECT run_id,
       stage,
       model,
       device_type,
       device_name,
       count(*) AS events,
       sum(device_hours) AS device_hours,
       max(device_hour_usd) AS device_hour_usd,
       CAST(sum(tokens_in) AS BIGINT) AS tokens_in,
       CAST(sum(tokens_out) AS BIGINT) AS tokens_out,
       CAST(sum(images) AS BIGINT) AS images,
       sum(usd) AS usd,
       CAST(sum(items) - sum(cached) AS BIGINT) AS computed,
       CAST(sum(cached) AS BIGINT) AS cached
FROM costs
WHERE $runs IS NULL OR list_contains($runs, run_id)
GROUP BY run_id, stage, model, device_type, device_name
ORDER BY run_id, usd DESC, stage
