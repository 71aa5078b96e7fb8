-- BLEU-1..4 and CIDEr-D of every candidate of a run, computed in DuckDB.
-- Each candidate is scored as if it were its item's caption in pycocoevalcap's Bleu(4) and Cider
-- (equal to 1e-9; CIDEr-D's document frequencies and log(number of images) come from the
-- references of the scored set: the run's captioned items that have references, or those of them
-- named in $items; or from all of the run's, $df = 'run', or its split's, $df = 'split'), so a
-- candidate whose text is the caption gets the caption's values exactly. Each distinct (item,
-- text) pair is scored once. Needs the PTB
-- tokens of the texts (view text_tokens: `capstore eval RUN --candidates` tokenizes them, once per
-- text ever); a candidate whose text or references lack tokens gets NULLs.
-- One row per candidate of a scored item: ids, iteration, the four BLEU values and CIDEr-D.
-- @param run INTEGER the run whose candidates are scored
-- @param items VARCHAR[] external item ids to score, e.g. 391895,522418 (default: every captioned item with references)
-- @param df VARCHAR CIDEr-D document frequencies from: 'subset' (default: the scored items' references), 'run' (every captioned item of the run) or 'split'
WITH scored AS MATERIALIZED (
    SELECT c.item_id, c.item
    FROM captions c
    WHERE c.run_id = $run AND ($items IS NULL OR list_contains($items, c.item))
      AND c.item_id IN (SELECT item_id FROM store."references")
),
ref AS MATERIALIZED (
    SELECT r.item_id, r.ordinal, r.text_sha FROM store."references" r WHERE r.item_id IN (SELECT item_id FROM scored)
),
df_ref AS MATERIALIZED (  -- the references CIDEr-D's document frequencies count over
    SELECT item_id, text_sha FROM ref WHERE coalesce($df, 'subset') = 'subset'
    UNION ALL
    SELECT r.item_id, r.text_sha FROM store."references" r
    WHERE $df = 'run' AND r.item_id IN (SELECT item_id FROM captions WHERE run_id = $run)
    UNION ALL
    SELECT r.item_id, r.text_sha
    FROM store."references" r JOIN store.items i ON i.id = r.item_id
    WHERE $df = 'split' AND i.split_id = (SELECT split_id FROM store.runs WHERE id = $run)
),
pair_text AS MATERIALIZED (  -- each distinct (item, text) among the candidates, numbered
    SELECT row_number() OVER () AS pid, item_id, text_sha
    FROM (SELECT DISTINCT c.item_id, c.text_sha FROM store.candidates c
          WHERE c.run_id = $run AND c.item_id IN (SELECT item_id FROM scored))
),
txt AS MATERIALIZED (  -- the texts' word ids, numbered (tid) so that later joins are on integers
    SELECT row_number() OVER () AS tid, t.text_sha, t.token_ids AS ids, len(t.token_ids) AS n
    FROM text_tokens t
    WHERE t.text_sha IN (SELECT text_sha FROM pair_text UNION SELECT text_sha FROM df_ref)
),
pairs AS MATERIALIZED (SELECT p.pid, p.item_id, x.tid, x.n FROM pair_text p JOIN txt x ON x.text_sha = p.text_sha),
refs AS MATERIALIZED (SELECT r.item_id, r.ordinal, x.tid, x.n FROM ref r JOIN txt x ON x.text_sha = r.text_sha),
gram AS MATERIALIZED (  -- every n-gram (n = 1..4) of every text and its count there; key = the n word ids, 21 bits each
    SELECT tid, g, count(*) AS tf,
           CASE WHEN g < 2097152 THEN 1 WHEN g < 4398046511104 THEN 2 WHEN g < 9223372036854775808 THEN 3 ELSE 4 END AS k
    FROM (SELECT tid, unnest(list_concat(
              list_transform(ids, a -> CAST(a AS HUGEINT)),
              list_transform(list_zip(ids, ids[2:], true), x -> CAST(x[1] AS HUGEINT) * 2097152 + x[2]),
              list_transform(list_zip(ids, ids[2:], ids[3:], true),
                             x -> (CAST(x[1] AS HUGEINT) * 2097152 + x[2]) * 2097152 + x[3]),
              list_transform(list_zip(ids, ids[2:], ids[3:], ids[4:], true),
                             x -> ((CAST(x[1] AS HUGEINT) * 2097152 + x[2]) * 2097152 + x[3]) * 2097152 + x[4])
          )) AS g
          FROM txt)
    GROUP BY tid, g
),
docs AS (
    SELECT CASE WHEN coalesce($df, 'subset') IN ('subset', 'run', 'split') THEN ln(count(DISTINCT item_id))
                ELSE error('df must be subset, run or split') END AS ref_len
    FROM df_ref
),
doc_freq AS MATERIALIZED (
    SELECT g.g, count(DISTINCT d.item_id) AS df
    FROM df_ref d JOIN txt x ON x.text_sha = d.text_sha JOIN gram g ON g.tid = x.tid
    GROUP BY g.g
),
vec AS MATERIALIZED (  -- CIDEr-D's tf-idf weight of each n-gram of each text
    SELECT g.tid, g.k, g.g, g.tf, g.tf * (docs.ref_len - ln(greatest(1.0, coalesce(f.df, 0)))) AS w
    FROM gram g CROSS JOIN docs LEFT JOIN doc_freq f ON f.g = g.g
),
norm AS MATERIALIZED (SELECT tid, k, sqrt(sum(w * w)) AS norm FROM vec GROUP BY tid, k),
ref_vec AS MATERIALIZED (SELECT r.item_id, r.ordinal, v.g, v.w, v.tf FROM refs r JOIN vec v ON v.tid = r.tid),
ref_max AS MATERIALIZED (SELECT item_id, g, max(tf) AS max_tf FROM ref_vec GROUP BY item_id, g),
pair_gram AS MATERIALIZED (SELECT p.pid, p.item_id, v.k, v.g, v.w, v.tf FROM pairs p JOIN vec v ON v.tid = p.tid),
shared AS MATERIALIZED (  -- the pairs' n-grams found in their item's references (only those can match)
    SELECT pg.pid, pg.item_id, pg.k, pg.g, pg.w, pg.tf, m.max_tf
    FROM pair_gram pg JOIN ref_max m ON m.item_id = pg.item_id AND m.g = pg.g
),
dot AS (  -- per (pair, reference, n): sum over the text's n-grams of min(w_text, w_ref) * w_ref
    SELECT s.pid, r.ordinal, s.k, sum(least(s.w, r.w) * r.w) AS dot
    FROM shared s JOIN ref_vec r ON r.item_id = s.item_id AND r.g = s.g
    GROUP BY s.pid, r.ordinal, s.k
),
sim AS (  -- cosine of the clipped vectors, times the length penalty exp(-(length difference)^2 / (2 * 6^2))
    SELECT p.pid, k.k, r.ordinal,
           CASE WHEN hn.norm <> 0 AND rn.norm <> 0 THEN coalesce(d.dot, 0.0) / (hn.norm * rn.norm)
                ELSE coalesce(d.dot, 0.0) END
           * pow(2.718281828459045, -pow(CAST(greatest(p.n - 1, 0) - greatest(r.n - 1, 0) AS DOUBLE), 2)
                                    / CAST(72 AS DOUBLE)) AS val
    FROM pairs p JOIN refs r ON r.item_id = p.item_id CROSS JOIN range(1, 5) k(k)
    LEFT JOIN norm hn ON hn.tid = p.tid AND hn.k = k.k
    LEFT JOIN norm rn ON rn.tid = r.tid AND rn.k = k.k
    LEFT JOIN dot d ON d.pid = p.pid AND d.ordinal = r.ordinal AND d.k = k.k
),
cider AS (  -- the mean over n of the sum over references, divided by the number of references, times 10
    SELECT pid, sum(s) / 4 / any_value(refs) * CAST(10 AS DOUBLE) AS cider
    FROM (SELECT pid, k, sum(val) AS s, count(*) AS refs FROM sim GROUP BY pid, k)
    GROUP BY pid
),
correct AS (  -- BLEU's clipped n-gram matches: min(count in the text, max count in one reference)
    SELECT pid,
           sum(least(tf, max_tf)) FILTER (WHERE k = 1) AS c1, sum(least(tf, max_tf)) FILTER (WHERE k = 2) AS c2,
           sum(least(tf, max_tf)) FILTER (WHERE k = 3) AS c3, sum(least(tf, max_tf)) FILTER (WHERE k = 4) AS c4
    FROM shared GROUP BY pid
),
reflen AS (  -- the closest reference length, the shorter on ties
    SELECT p.pid, any_value(p.n) AS testlen, arg_min(r.n, [abs(r.n - p.n), r.n]) AS reflen
    FROM pairs p JOIN refs r ON r.item_id = p.item_id
    GROUP BY p.pid
),
bleu AS (  -- pycocoevalcap's BleuScorer: cumulative precisions (1e-15 / 1e-9 guards), brevity penalty
    SELECT pid, p1, p1 * p2 AS q2, p1 * p2 * p3 AS q3, p1 * p2 * p3 * p4 AS q4,
           CASE WHEN ratio < 1 THEN exp(1 - 1 / ratio) ELSE 1.0 END AS bp
    FROM (SELECT l.pid,
                 (coalesce(c.c1, 0) + 1e-15) / (greatest(l.testlen, 0) + 1e-9) AS p1,
                 (coalesce(c.c2, 0) + 1e-15) / (greatest(l.testlen - 1, 0) + 1e-9) AS p2,
                 (coalesce(c.c3, 0) + 1e-15) / (greatest(l.testlen - 2, 0) + 1e-9) AS p3,
                 (coalesce(c.c4, 0) + 1e-15) / (greatest(l.testlen - 3, 0) + 1e-9) AS p4,
                 (l.testlen + 1e-15) / (l.reflen + 1e-9) AS ratio
          FROM reflen l LEFT JOIN correct c ON c.pid = l.pid)
),
complete AS (  -- items whose references all have tokens
    SELECT r.item_id FROM ref r LEFT JOIN txt x ON x.text_sha = r.text_sha
    GROUP BY r.item_id HAVING count(x.tid) = count(*)
)
SELECT c.id AS candidate_id, c.run_id, c.item_id, s.item, c.iteration, c.text_sha,
       b.p1 * b.bp AS bleu_1,
       pow(b.q2, 1 / CAST(2 AS DOUBLE)) * b.bp AS bleu_2,
       pow(b.q3, 1 / CAST(3 AS DOUBLE)) * b.bp AS bleu_3,
       pow(b.q4, 1 / CAST(4 AS DOUBLE)) * b.bp AS bleu_4,
       d.cider
FROM store.candidates c
JOIN scored s ON s.item_id = c.item_id
LEFT JOIN (pair_text p JOIN complete USING (item_id)) ON p.item_id = c.item_id AND p.text_sha = c.text_sha
LEFT JOIN bleu b ON b.pid = p.pid
LEFT JOIN cider d ON d.pid = p.pid
WHERE c.run_id = $run
ORDER BY c.id
