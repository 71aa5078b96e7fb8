-- CLIP pick vs oracle: how much metric the scorer's choice leaves on the table.
-- For each item, the candidate-scope metric of the run's caption (the candidate the scorer
-- picked) against the best candidate-scope metric of any of the item's candidates (an oracle
-- that knows the references). One row per run: items compared, the mean of both, the mean gap
-- (oracle − pick, never negative) and the share of items where the pick is the oracle's best.
-- Needs candidate-scope metric values (`capstore eval` with candidates).
-- @param metric VARCHAR candidate-scope metric (default: CIDEr)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
WITH vals AS (  -- the metric of every candidate
    SELECT v.run_id, v.item_id, v.candidate_id, v.value
    FROM candidate_values v
    WHERE v.metric = coalesce($metric, 'CIDEr') AND ($runs IS NULL OR list_contains($runs, v.run_id))
),
oracle AS (  -- the best candidate of each item
    SELECT run_id, item_id, max(value) AS oracle
    FROM vals GROUP BY run_id, item_id
),
picked AS (  -- the scorer's pick: the candidates whose text is the caption
    SELECT cap.run_id, cap.item_id, max(v.value) AS pick
    FROM store.captions cap
    JOIN store.candidates c ON c.run_id = cap.run_id AND c.item_id = cap.item_id AND c.text_sha = cap.text_sha
    JOIN vals v ON v.candidate_id = c.id
    WHERE $runs IS NULL OR list_contains($runs, cap.run_id)
    GROUP BY cap.run_id, cap.item_id
)
SELECT p.run_id,
       coalesce($metric, 'CIDEr') AS metric,
       count(*) AS items,
       avg(p.pick) AS mean_pick,
       avg(o.oracle) AS mean_oracle,
       avg(o.oracle - p.pick) AS mean_gap,
       avg(CASE WHEN p.pick >= o.oracle THEN 1.0 ELSE 0.0 END) AS share_pick_is_best
FROM picked p JOIN oracle o ON o.run_id = p.run_id AND o.item_id = p.item_id
GROUP BY p.run_id
ORDER BY p.run_id
