"""``evaluate_run``: a run's captions against its split's references, stored as metric values.

Reference metrics are what the official coco-caption evaluation (COCOEvalCap) computes: PTB
tokenization of references and captions, then Bleu(4), Meteor, Rouge, Cider and, when its jars are
there, SPICE. Tokens are kept once per distinct text in the analysis mirror
(``text_tokens``), so the tokenizer runs only for texts never seen. BLEU-1..4 and CIDEr-D are the
shipped DuckDB queries ``sql/caption_metrics.sql`` and ``sql/candidate_metrics.sql`` (equal to
pycocoevalcap to 1e-9); METEOR is pycocoevalcap's METEOR 1.5 JVM fed in batches in a background
thread, started before tokenizing so it loads while the rest works; ROUGE-L and SPICE are
pycocoevalcap's. CLIPScore/RefCLIPScore go through a scorer backend. A metric is served from the
store when its corpus row carries the digest of the current inputs (see ``store_values``);
otherwise it is computed and the run's rows of it are replaced (rows of older implementations are
kept while their inputs are still current). Candidate values (``--candidates``) are written as one
evaluation in typed columns (``candidate_eval_values``), not as ``metric_values`` rows.
"""

from __future__ import annotations

import math
import time
from typing import Any

from tqdm import tqdm

from capstore.errors import CapstoreError
from capstore.metrics import clipscore as clip_mod
from capstore.metrics import coco_caption, spice
from capstore.metrics.duckdb_metrics import MetricSession
from capstore.metrics.java import MetricError
from capstore.metrics.names import (ALL_METRICS, BLEU, CANDIDATE_METRICS, CIDER, CLIPSCORE, COCO_METRICS, METEOR,
                                    REFCLIPSCORE, REFERENCE_METRICS, ROUGE_L, SPICE, clip_implementation,
                                    reference_implementation)
from capstore.metrics.result import EvalResult
from capstore.metrics.store_values import (RunInputs, StoredCorpus, _sha, candidate_signature, load_inputs,
                                           load_texts, replace_candidate_values, replace_values, set_corpus_details,
                                           stored_corpus, value_row)
from capstore.store.engine import Store

DEFAULT_CLIP_SCORER = "preset"  # the ``clipscore`` scorer preset (open_clip:ViT-B-32@openai); None skips


def evaluate_run(store: Store, run_id: int, *, candidates: bool = False, clip_scorer: str | None = DEFAULT_CLIP_SCORER,
                 device: str = "auto", progress: bool = True, analysis: str | None = None) -> EvalResult:
    """Evaluate run ``run_id``'s captions; values are stored and returned (see the module docstring).

    ``clip_scorer``: ``"preset"`` for the documented CLIPScore scorer, a preset name or a scorer spec
    (``open_clip:NAME@TAG``, ``open_clip:/folder``), or None to skip CLIPScore and RefCLIPScore.
    ``candidates``: also BLEU-4 and CIDEr-D of every candidate of the run (scope ``candidate``).
    ``analysis``: the analysis mirror holding the token cache (default: the store's; ``off``: none).
    """
    inputs = load_inputs(store, run_id)
    result = EvalResult(run_id=run_id, name=inputs.name, items=len(inputs.items))
    digest = inputs.digest()
    _drop_stale(store, run_id, stored_corpus(store, run_id, ALL_METRICS), digest)
    stored = stored_corpus(store, run_id, ALL_METRICS)
    _reference_metrics(store, inputs, digest, stored, candidates, result, progress, analysis)
    if clip_scorer is None:
        result.notes.append("CLIPScore and RefCLIPScore skipped")
    else:
        _clip_metrics(store, inputs, digest, stored, _clip_spec(clip_scorer), device, result, progress)
    result.corpus = {m: result.corpus[m] for m in ALL_METRICS if m in result.corpus}
    order = {m: k for k, m in enumerate((*ALL_METRICS, "candidates"))}
    result.computed.sort(key=order.__getitem__)
    result.from_store = not result.computed
    return result


def _clip_spec(value: str) -> str:
    from capstore.backends.presets import presets

    named = presets()["scorer"]
    return clip_mod.resolve_spec(named["clipscore"] if value == DEFAULT_CLIP_SCORER else named.get(value, value))


def _fresh(stored: list[StoredCorpus], metric: str, impl: str, digest: str) -> StoredCorpus | None:
    return next((r for r in stored if r.metric == metric and r.implementation == impl
                 and r.details.get("digest") == digest), None)


def _drop_stale(store: Store, run_id: int, stored: list[StoredCorpus], digest: str) -> None:
    """Delete every value (all scopes) of a (metric, implementation) computed from other captions or references."""
    stale: dict[str, set[str]] = {}
    for row in stored:
        if row.details.get("inputs") != digest:
            stale.setdefault(row.metric, set()).add(row.implementation)
    if stale:
        replace_values(store, run_id, stale, [])


def _reference_metrics(store: Store, inputs: RunInputs, digest: str, stored: list[StoredCorpus], candidates: bool,
                       result: EvalResult, progress: bool, analysis: str | None) -> None:
    items = inputs.with_refs
    if not items:
        for m in REFERENCE_METRICS:
            result.unavailable[m] = "no references for this run's items (a dataset without captions)"
        result.candidates = 0 if candidates else None
        return
    if len(items) < len(inputs.items):
        result.notes.append(f"{len(inputs.items) - len(items)} captioned items have no references; "
                            "reference metrics are over the other items")
    wanted = list(COCO_METRICS)
    reason = spice.unavailable_reason()
    if reason is None:
        wanted.append(SPICE)
    else:
        result.unavailable[SPICE] = reason
    impl = {m: reference_implementation(m) for m in wanted}
    todo = []
    for m in wanted:
        row = _fresh(stored, m, impl[m], digest)
        if row is None:
            todo.append(m)
        else:
            result.corpus[m] = row.value
    cand_digest = _sha(digest, candidate_signature(store, inputs.run_id, items, analysis)) if candidates else ""
    cand_rows = [_fresh(stored, m, impl[m], digest) for m in CANDIDATE_METRICS] if candidates else []
    cand_done = all(r is not None and r.details.get("candidates", {}).get("digest") == cand_digest for r in cand_rows)
    if candidates and cand_done and not set(CANDIDATE_METRICS) & set(todo):
        result.candidates = int(cand_rows[0].details["candidates"]["count"])  # type: ignore[union-attr]
        cand_todo = False
    else:
        cand_todo = candidates
    if not todo and not cand_todo:
        return
    bar = tqdm(total=2 + len(todo) + int(cand_todo), desc=f"eval run {inputs.run_id}", disable=not progress)
    started = time.perf_counter()
    meteor: coco_caption.MeteorJob | None = None
    failed: dict[str, str] = {}
    if METEOR in todo:
        try:  # first: its JVM loads its tables while the texts are tokenized
            meteor = coco_caption.MeteorJob()
        except MetricError as exc:
            failed[METEOR] = str(exc)
    session = None
    try:
        bar.set_postfix_str("PTBTokenizer")
        session = MetricSession.open(store, inputs, items, candidates=cand_todo, analysis=analysis)
        if session.note:
            result.notes.append(session.note)
        bar.update(1)
        if todo:
            _compute_reference(store, inputs, digest, items, session, meteor, failed, todo, impl, result, bar)
        if cand_todo:
            bar.set_postfix_str("candidates")
            _compute_candidates(store, inputs, digest, cand_digest, items, session, impl, result)
            bar.update(1)
    finally:
        if meteor is not None:
            meteor.close()
        if session is not None:
            session.close()
    bar.update(1)
    bar.close()
    _record_usage(store, time.perf_counter() - started, len(items))


def _compute_reference(store: Store, inputs: RunInputs, digest: str, items: list[int], session: MetricSession,
                       meteor: coco_caption.MeteorJob | None, failed: dict[str, str], todo: list[str],
                       impl: dict[str, str], result: EvalResult, bar: Any) -> None:
    """BLEU and CIDEr-D in DuckDB and ROUGE-L, stored while METEOR works in its JVM; then METEOR and SPICE.

    Each metric's rows are replaced in their own transaction (a metric's corpus row and its item rows
    together), so the first ones are written while METEOR still works.
    """
    ptb = session.ptb([inputs.caption[i] for i in items] + [sha for i in items for sha in inputs.refs[i]])
    gts = {i: [ptb[sha] for sha in inputs.refs[i]] for i in items}
    res = {i: [ptb[inputs.caption[i]]] for i in items}
    if meteor is not None:
        meteor.start(gts, res)
    details = {"digest": digest, "inputs": digest, "items": len(items),
               "tokenizer": "pycocoevalcap PTBTokenizer (stanford-corenlp-3.4.1, -preserveLines -lowerCase)"}
    computed: dict[str, tuple[float, list[float]]] = {}
    if set(todo) & {*BLEU, CIDER}:
        bar.set_postfix_str("BLEU, CIDEr-D")
        scores = session.caption_metrics(inputs.run_id, [inputs.external[i] for i in items])
        for m in (*BLEU, CIDER):
            if m in todo:
                computed[m] = scores.corpus[m], [scores.per_item[m][i] for i in items]
                bar.update(1)
    if ROUGE_L in todo:
        bar.set_postfix_str(ROUGE_L)
        computed[ROUGE_L] = coco_caption.rouge_l(gts, res)
        bar.update(1)
    _store_scores(store, inputs, items, computed, impl, details, result)
    computed = {}
    if meteor is not None:
        bar.set_postfix_str(METEOR)
        try:
            computed[METEOR] = meteor.result()
        except MetricError as exc:
            failed[METEOR] = str(exc)
        bar.update(1)
    if SPICE in todo:
        bar.set_postfix_str(SPICE)
        try:
            value, per = spice.spice(gts, res)
            if math.isfinite(value):
                computed[SPICE] = value, per
            else:
                failed[SPICE] = "SPICE gave no score for some images"
        except MetricError as exc:
            failed[SPICE] = str(exc)
        bar.update(1)
    _store_scores(store, inputs, items, computed, impl, details, result)
    result.unavailable.update(failed)


def _store_scores(store: Store, inputs: RunInputs, items: list[int], computed: dict[str, tuple[float, list[float]]],
                  impl: dict[str, str], details: dict[str, Any], result: EvalResult) -> None:
    """Replace the run's rows of the ``computed`` metrics: corpus and per-item values."""
    if not computed:
        return
    rows = []
    for m, (value, per) in computed.items():
        rows.append(value_row(inputs.run_id, m, impl[m], value, details=details))
        rows.extend(value_row(inputs.run_id, m, impl[m], v, item_id=i) for i, v in zip(items, per) if math.isfinite(v))
    replace_values(store, inputs.run_id, {m: {impl[m]} for m in computed}, rows)
    result.corpus.update({m: value for m, (value, _) in computed.items()})
    result.computed.extend(computed)


def _compute_candidates(store: Store, inputs: RunInputs, digest: str, cand_digest: str, items: list[int],
                        session: MetricSession, impl: dict[str, str], result: EvalResult) -> None:
    """BLEU-4 and CIDEr-D of every candidate (``sql/candidate_metrics.sql``), written in one transaction."""
    import pyarrow as pa

    tables = list(session.candidate_metrics(inputs.run_id, [inputs.external[i] for i in items]))
    table = pa.concat_tables(tables) if tables else None
    count, distinct = replace_candidate_values(store, inputs.run_id, {m: impl[m] for m in CANDIDATE_METRICS}, table)
    info = {"digest": cand_digest, "count": count, "distinct": distinct}
    for row in stored_corpus(store, inputs.run_id, CANDIDATE_METRICS):
        if row.implementation == impl[row.metric]:
            set_corpus_details(store, inputs.run_id, row.metric, row.implementation, {**row.details, "candidates": info})
    result.candidates = count
    result.computed.append("candidates")


def _clip_metrics(store: Store, inputs: RunInputs, digest: str, stored: list[StoredCorpus], spec: str, device: str,
                  result: EvalResult, progress: bool) -> None:
    impl = clip_implementation(spec)
    hint = "pass --clip-scorer SPEC (e.g. open_clip:/folder) or --no-clipscore"
    try:
        clip_digest = _sha(digest, inputs.image_digest(), spec, clip_mod.weights_identity(spec))
    except CapstoreError as exc:
        _clip_unavailable(result, f"{exc}; {hint}")
        return
    wanted = [CLIPSCORE] + ([REFCLIPSCORE] if inputs.with_refs else [])
    if not inputs.with_refs:
        result.unavailable[REFCLIPSCORE] = "no references for this run's items"
    fresh = {m: _fresh(stored, m, impl, clip_digest) for m in wanted}
    if all(fresh.values()):
        result.corpus.update({m: row.value for m, row in fresh.items() if row})
        return
    try:
        scorer = clip_mod.load_scorer(spec, store, device=device)
    except CapstoreError as exc:
        _clip_unavailable(result, f"scorer {spec} cannot be loaded ({clip_mod.load_failure(exc)}); {hint}")
        return
    items, images = _readable_images(store, inputs)
    if not items:
        _clip_unavailable(result, "no item of this run has a readable image")
        return
    texts = load_texts(store, inputs)
    started = time.perf_counter()
    scores = clip_mod.clip_scores(scorer, images, [texts[inputs.caption[i]] for i in items],
                                  [[texts[s] for s in inputs.refs.get(i, [])] for i in items], progress)
    details = {"digest": clip_digest, "inputs": digest, "scorer": spec, "model_fingerprint": scorer.fingerprint,
               "formula": clip_mod.FORMULA, "prefix": clip_mod.PREFIX, "w": clip_mod.WEIGHT, "items": len(items),
               "items_without_image": len(inputs.items) - len(items), "seconds": time.perf_counter() - started}
    per = {CLIPSCORE: list(zip(items, scores.clip)),
           REFCLIPSCORE: [(i, v) for i, v in zip(items, scores.ref) if v is not None]}
    rows = []
    for m in wanted:
        if per[m]:
            result.corpus[m] = sum(v for _, v in per[m]) / len(per[m])
            rows.append(value_row(inputs.run_id, m, impl, result.corpus[m], details={**details, "items": len(per[m])}))
            rows.extend(value_row(inputs.run_id, m, impl, v, item_id=i) for i, v in per[m])
            result.computed.append(m)
    replace_values(store, inputs.run_id, {m: {impl} for m in wanted}, rows)
    if len(items) < len(inputs.items):
        result.notes.append(f"CLIPScore over the {len(items)} items with a readable image "
                            f"({len(inputs.items) - len(items)} without)")


def _clip_unavailable(result: EvalResult, reason: str) -> None:
    for m in (CLIPSCORE, REFCLIPSCORE):
        result.unavailable.setdefault(m, reason)


def _readable_images(store: Store, inputs: RunInputs) -> tuple[list[int], list[Any]]:
    from capstore.errors import InputError
    from capstore.store.images import read_image

    items, images = [], []
    with store.read() as s:
        for i in inputs.items:
            sha = inputs.image[i]
            if sha is None:
                continue
            try:
                images.append(read_image(s, sha))
            except InputError:
                continue
            items.append(i)
    return items, images


def _record_usage(store: Store, seconds: float, items: int) -> None:
    import platform

    from capstore.backends.usage import record_usage

    # run_id NULL: evaluating is not part of what the method cost (cost queries sum a run's events).
    record_usage(store, run_id=None, stage="eval", model_id=None, device_type="cpu",
                 device_name=platform.processor() or platform.machine() or "cpu", device_seconds=seconds,
                 wall_seconds=seconds, items=items, calls=1)

