-- BLEU-1..4 and CIDEr-D of a run's captions, per item and for the corpus, computed in DuckDB.
-- Equal to pycocoevalcap's Bleu(4) and Cider (what COCOEvalCap runs) to 1e-9, from the PTB tokens
-- of each text (view text_tokens: `capstore eval RUN` tokenizes every text it evaluates, once per
-- text ever). The evaluated set is the run's captioned items that have references, or those of
-- them named in $items. CIDEr-D's document frequencies and its log(number of images) come from
-- that set's references (as pycocoevalcap computes them), from every captioned item of the run
-- ($df = 'run': a subset's values as in the whole run's evaluation), or from every item of the
-- run's split with references ($df = 'split'), e.g. nocaps-style subsets against the whole split.
-- One row per evaluated item (scope 'item') and one corpus row (scope 'corpus', item NULL):
-- corpus BLEU from the summed n-gram counts and lengths, corpus CIDEr-D the mean over items.
-- missing_tokens counts the texts (caption and references) without tokens; values are NULL then.
-- @param run INTEGER the run whose captions are scored
-- @param items VARCHAR[] external item ids to score, e.g. 391895,522418 (default: every captioned item with references)
-- @param df VARCHAR CIDEr-D document frequencies from: 'subset' (default: the scored items' references), 'run' (every captioned item of the run) or 'split'
WITH scored AS MATERIALIZED (
    SELECT c.item_id, c.item, c.text_sha
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
txt AS MATERIALIZED (  -- the texts' word ids, numbered (tid) so that later joins are on integers
    SELECT row_number() OVER () AS tid, t.text_sha, t.token_ids AS ids, len(t.token_ids) AS n
    FROM text_tokens t
    WHERE t.text_sha IN (SELECT text_sha FROM scored UNION SELECT text_sha FROM df_ref)
),
hyp AS MATERIALIZED (SELECT s.item_id, x.tid, x.n FROM scored s JOIN txt x ON x.text_sha = s.text_sha),
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
hyp_vec AS MATERIALIZED (SELECT h.item_id, v.k, v.g, v.w, v.tf FROM hyp h JOIN vec v ON v.tid = h.tid),
ref_vec AS MATERIALIZED (SELECT r.item_id, r.ordinal, v.g, v.w, v.tf FROM refs r JOIN vec v ON v.tid = r.tid),
dot AS (  -- per (item, reference, n): sum over the caption's n-grams of min(w_caption, w_ref) * w_ref
    SELECT h.item_id, r.ordinal, h.k, sum(least(h.w, r.w) * r.w) AS dot
    FROM hyp_vec h JOIN ref_vec r ON r.item_id = h.item_id AND r.g = h.g
    GROUP BY h.item_id, r.ordinal, h.k
),
sim AS (  -- cosine of the clipped vectors, times the length penalty exp(-(length difference)^2 / (2 * 6^2))
    SELECT h.item_id, k.k, r.ordinal,
           CASE WHEN hn.norm <> 0 AND rn.norm <> 0 THEN coalesce(d.dot, 0.0) / (hn.norm * rn.norm)
                ELSE coalesce(d.dot, 0.0) END
           * pow(2.718281828459045, -pow(CAST(greatest(h.n - 1, 0) - greatest(r.n - 1, 0) AS DOUBLE), 2)
                                    / CAST(72 AS DOUBLE)) AS val
    FROM hyp h JOIN refs r ON r.item_id = h.item_id CROSS JOIN range(1, 5) k(k)
    LEFT JOIN norm hn ON hn.tid = h.tid AND hn.k = k.k
    LEFT JOIN norm rn ON rn.tid = r.tid AND rn.k = k.k
    LEFT JOIN dot d ON d.item_id = h.item_id AND d.ordinal = r.ordinal AND d.k = k.k
),
cider AS (  -- the mean over n of the sum over references, divided by the number of references, times 10
    SELECT item_id, sum(s) / 4 / any_value(refs) * CAST(10 AS DOUBLE) AS cider
    FROM (SELECT item_id, k, sum(val) AS s, count(*) AS refs FROM sim GROUP BY item_id, k)
    GROUP BY item_id
),
correct AS (  -- BLEU's clipped n-gram matches: min(count in the caption, max count in one reference)
    SELECT h.item_id, h.k, sum(least(h.tf, m.max_tf)) AS correct
    FROM hyp_vec h JOIN (SELECT item_id, g, max(tf) AS max_tf FROM ref_vec GROUP BY item_id, g) m
         ON m.item_id = h.item_id AND m.g = h.g
    GROUP BY h.item_id, h.k
),
counts AS (
    SELECT h.item_id, any_value(h.n) AS testlen,
           arg_min(r.n, [abs(r.n - h.n), r.n]) AS reflen,  -- the closest reference length, the shorter on ties
           any_value(greatest(h.n, 0)) AS g1, any_value(greatest(h.n - 1, 0)) AS g2,
           any_value(greatest(h.n - 2, 0)) AS g3, any_value(greatest(h.n - 3, 0)) AS g4,
           any_value(coalesce(c1.correct, 0)) AS c1, any_value(coalesce(c2.correct, 0)) AS c2,
           any_value(coalesce(c3.correct, 0)) AS c3, any_value(coalesce(c4.correct, 0)) AS c4
    FROM hyp h JOIN refs r ON r.item_id = h.item_id
    LEFT JOIN correct c1 ON c1.item_id = h.item_id AND c1.k = 1
    LEFT JOIN correct c2 ON c2.item_id = h.item_id AND c2.k = 2
    LEFT JOIN correct c3 ON c3.item_id = h.item_id AND c3.k = 3
    LEFT JOIN correct c4 ON c4.item_id = h.item_id AND c4.k = 4
    GROUP BY h.item_id
),
totals AS (  -- per item, and summed over the corpus (item_id NULL)
    SELECT item_id, testlen, reflen, c1, c2, c3, c4, g1, g2, g3, g4 FROM counts
    UNION ALL
    SELECT NULL, sum(testlen), sum(reflen), sum(c1), sum(c2), sum(c3), sum(c4), sum(g1), sum(g2), sum(g3), sum(g4)
    FROM counts
),
bleu AS (  -- pycocoevalcap's BleuScorer: cumulative precisions (1e-15 / 1e-9 guards), brevity penalty
    SELECT item_id, p1, p1 * p2 AS q2, p1 * p2 * p3 AS q3, p1 * p2 * p3 * p4 AS q4,
           CASE WHEN ratio < 1 THEN exp(1 - 1 / ratio) ELSE 1.0 END AS bp
    FROM (SELECT item_id,
                 (c1 + 1e-15) / (g1 + 1e-9) AS p1,  -- correct / guessed n-grams (guessed: max(0, length - n + 1))
                 (c2 + 1e-15) / (g2 + 1e-9) AS p2,
                 (c3 + 1e-15) / (g3 + 1e-9) AS p3,
                 (c4 + 1e-15) / (g4 + 1e-9) AS p4,
                 (testlen + 1e-15) / (reflen + 1e-9) AS ratio
          FROM totals)
),
missing AS (  -- texts without tokens, per item
    SELECT u.item_id, count(*) FILTER (WHERE x.tid IS NULL) AS missing
    FROM (SELECT item_id, text_sha FROM scored UNION ALL SELECT item_id, text_sha FROM ref) u
    LEFT JOIN txt x ON x.text_sha = u.text_sha
    GROUP BY u.item_id
),
result AS (
    SELECT s.item_id, s.item, m.missing, b.p1, b.q2, b.q3, b.q4, b.bp, c.cider
    FROM scored s JOIN missing m ON m.item_id = s.item_id
    LEFT JOIN bleu b ON b.item_id = s.item_id LEFT JOIN cider c ON c.item_id = s.item_id
    UNION ALL
    SELECT NULL, NULL, (SELECT sum(missing) FROM missing), b.p1, b.q2, b.q3, b.q4, b.bp, (SELECT avg(cider) FROM cider)
    FROM bleu b WHERE b.item_id IS NULL
)
SELECT CAST($run AS BIGINT) AS run_id,
       CASE WHEN item_id IS NULL THEN 'corpus' ELSE 'item' END AS scope,
       item_id,
       item,
       CASE WHEN missing = 0 THEN p1 * bp END AS bleu_1,
       CASE WHEN missing = 0 THEN pow(q2, 1 / CAST(2 AS DOUBLE)) * bp END AS bleu_2,
       CASE WHEN missing = 0 THEN pow(q3, 1 / CAST(3 AS DOUBLE)) * bp END AS bleu_3,
       CASE WHEN missing = 0 THEN pow(q4, 1 / CAST(4 AS DOUBLE)) * bp END AS bleu_4,
       CASE WHEN missing = 0 THEN cider END AS cider,
       CAST(missing AS BIGINT) AS missing_tokens
FROM result
ORDER BY item_id NULLS FIRST
