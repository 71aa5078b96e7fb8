-- CLIP pick vs oracle: how much metric the scorer's choice leaves on the table.
-- For each item, the candidate-scope metric of the run's caption (the candidate the scorer
-- picked) against the best candidate-scope metric of any of the item's candidates (an oracle
-- that knows the references). One row per run: items compared, the mean of both, the mean gap
-- (oracle − pick, never negative) and the share of items where the pick is the oracle's best.
-- Needs candidate-scope metric values (`capstore eval` with candidates).
-- @param metric VARCHAR candidate-scope metric (default: CIDEr)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
WITH candidate_metric AS (
    SELECT c.run_id, c.item_id, c.text_sha, max(m.value) AS value
    FROM candidates c
    JOIN metrics m ON m.candidate_id = c.candidate_id
    WHERE m.scope = 'candidate' AND m.metric = coalesce($metric, 'CIDEr')
      AND ($runs IS NULL OR list_contains($runs, c.run_id))
    GROUP BY c.run_id, c.item_id, c.text_sha
),
per_item AS (
    SELECT cap.run_id, cap.item_id,
           max(cm.value) FILTER (WHERE cm.text_sha = cap.text_sha) AS pick,
           max(cm.value) AS oracle
    FROM captions cap
    JOIN candidate_metric cm ON cm.run_id = cap.run_id AND cm.item_id = cap.item_id
    GROUP BY cap.run_id, cap.item_id
)
SELECT run_id,
       coalesce($metric, 'CIDEr') AS metric,
       count(*) AS items,
       avg(pick) AS mean_pick,
       avg(oracle) AS mean_oracle,
       avg(oracle - pick) AS mean_gap,
       avg(CASE WHEN pick >= oracle THEN 1.0 ELSE 0.0 END) AS share_pick_is_best
FROM per_item
WHERE pick IS NOT NULL
GROUP BY run_id
ORDER BY run_id
