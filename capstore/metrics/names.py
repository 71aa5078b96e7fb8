"""Metric names (fixed: SQL queries and reports select on them) and the implementation strings stored with values.

An implementation string names the code that computed a value and its version; it changes whenever
the computation changes (``EVAL_VERSION`` is raised with any change in how capstore calls the
scorers), so values of an older computation are kept beside the new ones, never overwritten.
"""

from __future__ import annotations

from functools import lru_cache

BLEU = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
METEOR, ROUGE_L, CIDER, SPICE = "METEOR", "ROUGE_L", "CIDEr", "SPICE"
CLIPSCORE, REFCLIPSCORE = "CLIPScore", "RefCLIPScore"

# What COCOEvalCap computes, in its order (SPICE last).
COCO_METRICS = (*BLEU, METEOR, ROUGE_L, CIDER)
REFERENCE_METRICS = (*COCO_METRICS, SPICE)
CLIP_METRICS = (CLIPSCORE, REFCLIPSCORE)
ALL_METRICS = (*REFERENCE_METRICS, *CLIP_METRICS)
# Computed for every candidate with ``--candidates``.
CANDIDATE_METRICS = ("Bleu_4", CIDER)

EVAL_VERSION = 2  # 2: BLEU and CIDEr-D computed by the sql/ queries in DuckDB (equal to pycocoevalcap to 1e-9)
CLIPSCORE_VERSION = 1

# pycocoevalcap's PTBTokenizer: Stanford CoreNLP 3.4.1, -preserveLines -lowerCase, its punctuation removed.
TOKENIZER = "ptb-corenlp-3.4.1+pycocoevalcap-punct"

_SLUGS = {**{m: "bleu" for m in BLEU}, METEOR: "meteor-1.5", ROUGE_L: "rouge-l", CIDER: "cider-d", SPICE: "spice-1.0"}


@lru_cache(maxsize=1)
def pycocoevalcap_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pycocoevalcap")
    except PackageNotFoundError:
        return "unknown"


def reference_implementation(metric: str) -> str:
    """E.g. ``capstore-sql/cider-d+ptb/capstore-eval-2`` (BLEU and CIDEr-D: the shipped DuckDB queries,
    pycocoevalcap's formulas) or ``pycocoevalcap-1.2/meteor-1.5+ptb/capstore-eval-2`` (PTB-tokenized
    inputs, as COCOEvalCap)."""
    code = "capstore-sql" if metric in (*BLEU, CIDER) else f"pycocoevalcap-{pycocoevalcap_version()}"
    return f"{code}/{_SLUGS[metric]}+ptb/capstore-eval-{EVAL_VERSION}"


def clip_implementation(scorer_spec: str) -> str:
    """E.g. ``capstore-clipscore-1/open_clip:ViT-B-32@openai`` (long specs are shortened with a hash)."""
    import hashlib

    prefix = f"capstore-clipscore-{CLIPSCORE_VERSION}/"
    if len(prefix) + len(scorer_spec) <= 200:
        return prefix + scorer_spec
    digest = hashlib.sha256(scorer_spec.encode()).hexdigest()[:16]
    return f"{prefix}…{scorer_spec[-(200 - len(prefix) - 20):]}#{digest}"
