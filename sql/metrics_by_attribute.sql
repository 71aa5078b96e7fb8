-- Metrics by item attribute: the nocaps table (CIDEr and SPICE in-domain, near-domain, out-domain, overall).
-- One row per run and value of an item attribute (`--format nocaps` keeps each image's `domain`),
-- then the run's `overall` row: the items' count and the mean of their item-scope CIDEr and SPICE
-- (the newest implementation's). Those values come from `capstore eval`, whose CIDEr-D document
-- frequencies are the references of every evaluated item — the whole split for a run over it — so a
-- domain's CIDEr is its items' share of the split's CIDEr, as nocaps's evaluation computes it, not
-- CIDEr recomputed on the domain alone; overall equals the corpus value. SPICE is NULL where it was
-- not computed (its jars missing).
-- @param attribute VARCHAR the item attribute to group by (default: domain)
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
WITH item_values AS (
    SELECT m.run_id, m.item_id, m.metric, arg_max(m.value, m.metric_id) AS value
    FROM metrics m
    WHERE m.scope = 'item' AND m.metric IN ('CIDEr', 'SPICE')
      AND ($runs IS NULL OR list_contains($runs, m.run_id))
    GROUP BY m.run_id, m.item_id, m.metric
),
labelled AS (
    SELECT v.*, coalesce(json_extract_string(i.attributes, '$.' || coalesce($attribute, 'domain')), '(none)') AS value_of
    FROM item_values v
    JOIN items i ON i.item_id = v.item_id
),
grouped AS (
    SELECT run_id, value_of, 0 AS overall, count(DISTINCT item_id) AS items,
           avg(value) FILTER (WHERE metric = 'CIDEr') AS cider,
           avg(value) FILTER (WHERE metric = 'SPICE') AS spice
    FROM labelled
    GROUP BY run_id, value_of
    UNION ALL
    SELECT run_id, 'overall', 1, count(DISTINCT item_id),
           avg(value) FILTER (WHERE metric = 'CIDEr'),
           avg(value) FILTER (WHERE metric = 'SPICE')
    FROM labelled
    GROUP BY run_id
)
SELECT r.run_id,
       r.run_name AS run,
       r.method,
       r.dataset,
       r.modality,
       coalesce($attribute, 'domain') AS attribute,
       g.value_of AS value,
       g.items,
       g.cider,
       g.spice
FROM grouped g
JOIN runs r ON r.run_id = g.run_id
ORDER BY r.run_id, g.overall, g.value_of
