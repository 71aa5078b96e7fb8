-- MILS per iteration: the best score so far and the metric curve of the best-so-far caption.
-- One row per (run, iteration): items that reached it, the mean over items of the scorer's best
-- score (what MILS optimises), its gain over the previous iteration, and the mean candidate-scope
-- metric of each item's best text at that iteration (the caption MILS would give if it stopped
-- there; NULL where no candidate metric was computed), over items_with_metric items.
-- @param metric VARCHAR candidate-scope metric for the curve (default: CIDEr)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
WITH best AS (  -- each item's best text and score after each iteration
    SELECT s.run_id, s.item_id, s.iteration, s.best_score, s.best_text_sha
    FROM store.iteration_states s
    WHERE $runs IS NULL OR list_contains($runs, s.run_id)
),
best_metric AS (  -- the metric of each item's best text at each iteration (mean over the candidates with that text)
    SELECT b.run_id, b.item_id, b.iteration, avg(m.value) AS value
    FROM best b
    JOIN store.candidates c ON c.run_id = b.run_id AND c.item_id = b.item_id AND c.text_sha = b.best_text_sha
    JOIN candidate_values m ON m.candidate_id = c.id
    WHERE m.metric = coalesce($metric, 'CIDEr') AND ($runs IS NULL OR list_contains($runs, m.run_id))
    GROUP BY b.run_id, b.item_id, b.iteration
),
curve AS (
    SELECT b.run_id, b.iteration, count(*) AS items, avg(b.best_score) AS mean_best_score,
           avg(bm.value) AS mean_metric, count(bm.value) AS items_with_metric
    FROM best b
    LEFT JOIN best_metric bm ON bm.run_id = b.run_id AND bm.item_id = b.item_id AND bm.iteration = b.iteration
    GROUP BY b.run_id, b.iteration
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
