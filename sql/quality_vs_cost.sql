-- Quality vs cost: one corpus metric of each run against its dollars and device-hours.
-- One row per run that has the metric, cheapest first: the metric, dollars, dollars per 1,000
-- captions, device-hours, and metric points per dollar (NULL for a run that cost $0).
-- @param metric VARCHAR the metric to compare (default: CIDEr)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
SELECT r.run_id,
       r.run_name AS run,
       r.method,
       m.metric,
       m.value,
       coalesce(c.usd, 0) AS usd,
       1000 * coalesce(c.usd, 0) / nullif(r.captions, 0) AS usd_per_1k_captions,
       coalesce(c.device_hours, 0) AS device_hours,
       m.value / nullif(c.usd, 0) AS value_per_usd
FROM runs r
JOIN (
    SELECT run_id, metric, arg_max(value, metric_id) AS value
    FROM metrics
    WHERE scope = 'corpus' AND metric = coalesce($metric, 'CIDEr')
    GROUP BY run_id, metric
) m ON m.run_id = r.run_id
LEFT JOIN run_costs c ON c.run_id = r.run_id
WHERE $runs IS NULL OR list_contains($runs, r.run_id)
ORDER BY usd, r.run_id
