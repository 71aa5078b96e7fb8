"""Metrics of runs: the coco-caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D, SPICE), CLIPScore and
RefCLIPScore, per corpus, item and candidate, stored as ``metric_values``.

Heavy imports (pycocoevalcap, numpy, torch) happen inside the functions that need them.
"""

from capstore.metrics.evaluate import DEFAULT_CLIP_SCORER, evaluate_run
from capstore.metrics.names import ALL_METRICS, CANDIDATE_METRICS, COCO_METRICS
from capstore.metrics.result import EvalResult

__all__ = ["ALL_METRICS", "CANDIDATE_METRICS", "COCO_METRICS", "DEFAULT_CLIP_SCORER", "EvalResult", "evaluate_run"]
