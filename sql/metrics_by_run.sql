-- Metrics by run, side by side with what each run cost: the cost study's table.
-- One row per run: its corpus-scope BLEU-4, METEOR, ROUGE-L, CIDEr, SPICE and CLIPScore (the
-- newest value where several implementations computed one; NULL where none did), then the run's
-- dollars (usage priced by the price table) and device-hours.
-- @param runs INTEGER[] run ids to show, e.g. 1,2,3 (default: every run)
SELECT r.run_id,
       r.run_name AS run,
       r.method,
       r.dataset,
       r.captions,
       m.bleu_4,
       m.meteor,
       m.rouge_l,
       m.cider,
       m.spice,
       m.clipscore,
       c.usd AS dollars,
       c.device_hours AS hours
FROM runs r
LEFT JOIN (
    SELECT run_id,
           arg_max(value, metric_id) FILTER (WHERE metric = 'Bleu_4') AS bleu_4,
           arg_max(value, metric_id) FILTER (WHERE metric = 'METEOR') AS meteor,
           arg_max(value, metric_id) FILTER (WHERE metric = 'ROUGE_L') AS rouge_l,
           arg_max(value, metric_id) FILTER (WHERE metric = 'CIDEr') AS cider,
           arg_max(value, metric_id) FILTER (WHERE metric = 'SPICE') AS spice,
           arg_max(value, metric_id) FILTER (WHERE metric = 'CLIPScore') AS clipscore
    FROM metrics
    WHERE scope = 'corpus'
    GROUP BY run_id
) m ON m.run_id = r.run_id
LEFT JOIN run_costs c ON c.run_id = r.run_id
WHERE $runs IS NULL OR list_contains($runs, r.run_id)
ORDER BY r.run_id
