-- Candidates per image: how many candidates each run wrote per item, and how many repeat a text.
-- One row per run: items with candidates, candidates, the mean / min / max per item, distinct
-- texts per item, and repeats (a text proposed again at a later iteration of the same item).
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
WITH per_item AS (
    SELECT run_id, item_id, count(*) AS candidates, count(DISTINCT text_sha) AS distinct_texts
    FROM candidates
    WHERE $runs IS NULL OR list_contains($runs, run_id)
    GROUP BY run_id, item_id
)
SELECT run_id,
       count(*) AS items,
       CAST(sum(candidates) AS BIGINT) AS candidates,
       avg(candidates) AS per_item,
       min(candidates) AS min_per_item,
       max(candidates) AS max_per_item,
       avg(distinct_texts) AS distinct_per_item,
       CAST(sum(candidates - distinct_texts) AS BIGINT) AS repeats
FROM per_item
GROUP BY run_id
ORDER BY run_id
