-- Early-stop savings: LLM iterations (and their cost) that --early-stop did not spend.
-- One row per MILS run with early stopping configured or any item stopped early: items, items
-- stopped, iterations planned (items × iterations), iterations done, iterations saved by the
-- stopped items (planned minus where they stopped), the share saved, and the dollars and
-- device-hours that saved share would have cost at the run's own cost per iteration done
-- (usage of every stage but the pool and image encoding, which do not depend on iterations).
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every MILS run)
WITH per_run AS (
    SELECT w.run_id,
           count(*) AS items,
           count(w.stopped_early_at) AS items_stopped,
           sum(greatest(w.iterations_done, 0)) AS iterations_done,
           sum(r.iterations - w.iterations_done) FILTER (WHERE w.stopped_early_at IS NOT NULL) AS iterations_saved,
           any_value(r.iterations) AS iterations,
           any_value(r.early_stop_patience) AS patience
    FROM work w
    JOIN runs r ON r.run_id = w.run_id
    WHERE r.method = 'mils' AND ($runs IS NULL OR list_contains($runs, w.run_id))
    GROUP BY w.run_id
),
iteration_cost AS (
    SELECT run_id, sum(usd) AS usd, sum(device_hours) AS device_hours
    FROM costs
    WHERE stage NOT IN ('encode_pool', 'encode_image')
    GROUP BY run_id
)
SELECT p.run_id,
       p.patience,
       p.iterations,
       p.items,
       p.items_stopped,
       p.items * p.iterations AS iterations_planned,
       CAST(p.iterations_done AS BIGINT) AS iterations_done,
       CAST(coalesce(p.iterations_saved, 0) AS BIGINT) AS iterations_saved,
       coalesce(p.iterations_saved, 0) / nullif(p.items * p.iterations, 0) AS share_saved,
       coalesce(p.iterations_saved, 0) * c.usd / nullif(p.iterations_done, 0) AS est_usd_saved,
       coalesce(p.iterations_saved, 0) * c.device_hours / nullif(p.iterations_done, 0) AS est_device_hours_saved
FROM per_run p
LEFT JOIN iteration_cost c ON c.run_id = p.run_id
WHERE p.patience IS NOT NULL OR p.items_stopped > 0
ORDER BY p.run_id
