-- Cost by run: device-hours × the device's hourly price, plus API tokens and images × their prices.
-- One row per run (runs without usage events show zero): device- and GPU-hours, tokens, images,
-- the dollars of each part, the total, and dollars per 1,000 captions (the cost study quotes a
-- 5,000-image split). Rates come from the price table (`capstore prices list`).
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
SELECT r.run_id,
       r.run_name AS run,
       r.method,
       r.captions,
       coalesce(sum(c.device_hours), 0) AS device_hours,
       coalesce(sum(c.device_hours) FILTER (WHERE c.device_type NOT IN ('cpu', 'api')), 0) AS gpu_hours,
       coalesce(sum(c.device_usd), 0) AS device_usd,
       CAST(coalesce(sum(c.tokens_in), 0) AS BIGINT) AS tokens_in,
       CAST(coalesce(sum(c.tokens_out), 0) AS BIGINT) AS tokens_out,
       coalesce(sum(c.tokens_usd), 0) AS tokens_usd,
       CAST(coalesce(sum(c.images), 0) AS BIGINT) AS images,
       coalesce(sum(c.images_usd), 0) AS images_usd,
       coalesce(sum(c.usd), 0) AS usd,
       1000 * coalesce(sum(c.usd), 0) / nullif(r.captions, 0) AS usd_per_1k_captions
FROM runs r
LEFT JOIN costs c ON c.run_id = r.run_id
WHERE $runs IS NULL OR list_contains($runs, r.run_id)
GROUP BY r.run_id, r.run_name, r.method, r.captions
ORDER BY r.run_id
