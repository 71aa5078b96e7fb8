-- Pool-size ablation: MILS runs that differ in their pool size (--pool-size; NULL = the whole pool).
-- One row per MILS run, smallest pool first: pool size, iterations, the mean best score after
-- iteration 0 (the pool alone) and at the end, the corpus metric, dollars and device-hours.
-- Compare rows that share scorer, generator and dataset (shown) to isolate the pool's effect.
-- @param metric VARCHAR corpus metric to show (default: CIDEr)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every MILS run)
SELECT r.run_id,
       r.run_name AS run,
       r.pool_size,
       r.iterations,
       r.dataset,
       r.scorer,
       r.generator,
       s.pool_best_score,
       s.final_best_score,
       coalesce($metric, 'CIDEr') AS metric,
       m.value,
       c.usd,
       c.device_hours
FROM runs r
LEFT JOIN (
    SELECT run_id,
           avg(best_score) FILTER (WHERE iteration = 0) AS pool_best_score,
           avg(best_score) FILTER (WHERE is_last) AS final_best_score
    FROM (SELECT run_id, iteration, best_score,
                 iteration = max(iteration) OVER (PARTITION BY run_id, item_id) AS is_last
          FROM iterations)
    GROUP BY run_id
) s ON s.run_id = r.run_id
LEFT JOIN (
    SELECT run_id, arg_max(value, metric_id) AS value
    FROM metrics
    WHERE scope = 'corpus' AND metric = coalesce($metric, 'CIDEr')
    GROUP BY run_id
) m ON m.run_id = r.run_id
LEFT JOIN run_costs c ON c.run_id = r.run_id
WHERE r.method = 'mils' AND ($runs IS NULL OR list_contains($runs, r.run_id))
ORDER BY r.pool_size NULLS LAST, r.run_id
