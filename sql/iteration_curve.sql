-- MILS per iteration: the best score so far and the metric curve of the best-so-far caption.
-- One row per (run, iteration): items that reached it, the mean over items of the scorer's best
-- score (what MILS optimises), its gain over the previous iteration, and the mean candidate-scope
-- metric of each item's best text at that iteration (the caption MILS would give if it stopped
-- there; NULL where no candidate metric was computed), over items_with_metric items.
-- @param metric VARCHAR candidate-scope metric for the curve (default: CIDEr)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
WITH text_metric AS (
    SELECT c.run_id, c.item_id, c.text_sha, avg(m.value) AS value
    FROM candidates c
    JOIN metrics m ON m.candidate_id = c.candidate_id
    WHERE m.scope = 'candidate' AND m.metric = coalesce($metric, 'CIDEr')
      AND ($runs IS NULL OR list_contains($runs, c.run_id))
    GROUP BY c.run_id, c.item_id, c.text_sha
),
best AS (
    SELECT s.run_id, s.item_id, s.iteration, s.best_score, tm.value AS metric_value
    FROM iterations s
    LEFT JOIN text_metric tm ON tm.run_id = s.run_id AND tm.item_id = s.item_id
         AND tm.text_sha = s.best_text_sha
    WHERE $runs IS NULL OR list_contains($runs, s.run_id)
),
curve AS (
    SELECT run_id, iteration, count(*) AS items, avg(best_score) AS mean_best_score,
           avg(metric_value) AS mean_metric, count(metric_value) AS items_with_metric
    FROM best
    GROUP BY run_id, iteration
)
SELECT run_id,
       iteration,
       items,
       mean_best_score,
       mean_best_score - lag(mean_best_score) OVER (PARTITION BY run_id ORDER BY iteration) AS score_gain,
       coalesce($metric, 'CIDEr') AS metric,
       mean_metric,
       items_with_metric
FROM curve
ORDER BY run_id, iteration
