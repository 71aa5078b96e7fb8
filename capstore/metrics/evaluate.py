"""``evaluate_run``: a run's captions against its split's references, stored as metric values.

Reference metrics are what the official coco-caption evaluation (COCOEvalCap) computes: PTB
tokenization of references and captions (one tokenizer call for everything, candidates included),
then Bleu(4), Meteor, Rouge, Cider and, when its jars are there, SPICE. CLIPScore/RefCLIPScore go
through a scorer backend. A metric is served from the store when its corpus row carries the digest
of the current inputs (see ``store_values``); otherwise it is computed and the run's rows of it are
replaced (rows of older implementations are kept while their inputs are still current).
"""

from __future__ import annotations

import math
import time
from typing import Any

from tqdm import tqdm

from capstore.errors import CapstoreError
from capstore.metrics import clipscore as clip_mod
from capstore.metrics import coco_caption, spice
from capstore.metrics.candidates import score_pairs
from capstore.metrics.java import MetricError, ptb_tokenize
from capstore.metrics.names import (CANDIDATE_METRICS, CLIPSCORE, COCO_METRICS, REFCLIPSCORE, REFERENCE_METRICS, SPICE,
                                    ALL_METRICS, clip_implementation, reference_implementation)
from capstore.metrics.result import EvalResult
from capstore.metrics.store_values import (RunInputs, StoredCorpus, _sha, candidate_signature, load_candidates,
                                           load_inputs, load_texts, replace_values, set_corpus_details, stored_corpus,
                                           value_row)
from capstore.store.engine import Store

DEFAULT_CLIP_SCORER = "preset"  # the ``clipscore`` scorer preset (open_clip:ViT-B-32@openai); None skips


def evaluate_run(store: Store, run_id: int, *, candidates: bool = False, clip_scorer: str | None = DEFAULT_CLIP_SCORER,
                 device: str = "auto", progress: bool = True) -> EvalResult:
    """Evaluate run ``run_id``'s captions; values are stored and returned (see the module docstring).

    ``clip_scorer``: ``"preset"`` for the documented CLIPScore scorer, a preset name or a scorer spec
    (``open_clip:NAME@TAG``, ``open_clip:/folder``), or None to skip CLIPScore and RefCLIPScore.
    ``candidates``: also BLEU-4 and CIDEr-D of every candidate of the run (scope ``candidate``).
    """
    inputs = load_inputs(store, run_id)
    result = EvalResult(run_id=run_id, name=inputs.name, items=len(inputs.items))
    digest = inputs.digest()
    _drop_stale(store, run_id, stored_corpus(store, run_id, ALL_METRICS), digest)
    stored = stored_corpus(store, run_id, ALL_METRICS)
    _reference_metrics(store, inputs, digest, stored, candidates, result, progress)
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
                       result: EvalResult, progress: bool) -> None:
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
    cand_digest = _sha(digest, candidate_signature(store, inputs.run_id, items)) if candidates else ""
    cand_rows = [_fresh(stored, m, impl[m], digest) for m in CANDIDATE_METRICS] if candidates else []
    cand_done = all(r is not None and r.details.get("candidates", {}).get("digest") == cand_digest for r in cand_rows)
    if candidates and cand_done and not set(CANDIDATE_METRICS) & set(todo):
        result.candidates = int(cand_rows[0].details["candidates"]["count"])  # type: ignore[union-attr]
        cand_todo = False
    else:
        cand_todo = candidates
    if not todo and not cand_todo:
        return
    stages = {"BLEU" if m.startswith("Bleu") else m for m in todo}
    bar = tqdm(total=1 + len(stages) + int(cand_todo), desc=f"eval run {inputs.run_id}", disable=not progress)
    started = time.perf_counter()
    cands = load_candidates(store, inputs.run_id, items) if cand_todo else []
    texts = load_texts(store, inputs)
    if cands:
        load_texts(store, inputs, (t for _, _, t in cands))
    bar.set_postfix_str("PTBTokenizer")
    gts, res, cand_tok = _tokenize(inputs, items, texts, cands)
    if todo:
        _compute_reference(store, inputs, digest, items, gts, res, todo, impl, result, bar)
    if cand_todo:
        bar.update(1)
        bar.set_postfix_str("candidates")
        _compute_candidates(store, inputs, digest, cand_digest, gts, cands, cand_tok, impl, result, progress)
    bar.update(1)
    bar.close()
    _record_usage(store, time.perf_counter() - started, len(items))


def _tokenize(inputs: RunInputs, items: list[int], texts: dict[str, str], cands: list[tuple[int, int, str]]):  # type: ignore[no-untyped-def]
    """One PTBTokenizer call: the references, the captions and each distinct candidate text."""
    ref_shas = [sha for i in items for sha in inputs.refs[i]]
    cand_shas = list(dict.fromkeys(t for _, _, t in cands))
    tokens = ptb_tokenize([texts[s] for s in ref_shas] + [texts[inputs.caption[i]] for i in items]
                          + [texts[s] for s in cand_shas])
    gts: dict[int, list[str]] = {}
    pos = 0
    for i in items:
        n = len(inputs.refs[i])
        gts[i] = tokens[pos : pos + n]
        pos += n
    res = {i: [tokens[pos + k]] for k, i in enumerate(items)}
    pos += len(items)
    return gts, res, dict(zip(cand_shas, tokens[pos:]))


def _compute_reference(store: Store, inputs: RunInputs, digest: str, items: list[int], gts: dict, res: dict,
                       todo: list[str], impl: dict[str, str], result: EvalResult, bar: Any) -> None:
    def step(name: str) -> None:  # a stage starts: the one before it is done
        bar.update(1)
        bar.set_postfix_str(name)

    scores = coco_caption.compute(gts, res, [m for m in todo if m != SPICE], step)
    if SPICE in todo:
        step(SPICE)
        try:
            scores.corpus[SPICE], scores.per_image[SPICE] = spice.spice(gts, res)
            if not math.isfinite(scores.corpus[SPICE]):
                del scores.corpus[SPICE]
                scores.failed[SPICE] = "SPICE gave no score for some images"
        except MetricError as exc:
            scores.failed[SPICE] = str(exc)
    result.unavailable.update(scores.failed)
    details = {"digest": digest, "inputs": digest, "items": len(items),
               "tokenizer": "pycocoevalcap PTBTokenizer (stanford-corenlp-3.4.1, -preserveLines -lowerCase)"}
    rows = []
    for m, value in scores.corpus.items():
        rows.append(value_row(inputs.run_id, m, impl[m], value, details=details))
        rows.extend(value_row(inputs.run_id, m, impl[m], v, item_id=i)
                    for i, v in zip(items, scores.per_image[m]) if math.isfinite(v))
    replace_values(store, inputs.run_id, {m: {impl[m]} for m in scores.corpus}, rows)
    result.corpus.update(scores.corpus)
    result.computed.extend(scores.corpus)


def _compute_candidates(store: Store, inputs: RunInputs, digest: str, cand_digest: str, gts: dict,
                        cands: list[tuple[int, int, str]], tokens: dict[str, str], impl: dict[str, str],
                        result: EvalResult, progress: bool) -> None:
    pairs = list(dict.fromkeys((item, sha) for _, item, sha in cands))
    tok_pairs = [(item, tokens[sha]) for item, sha in pairs]
    bleu, cider = score_pairs(tok_pairs, gts, progress)
    values = {"Bleu_4": bleu, "CIDEr": cider}
    index = {pair: k for k, pair in enumerate(pairs)}
    rows = (value_row(inputs.run_id, m, impl[m], values[m][index[(item, sha)]], item_id=item, candidate_id=cid)
            for m in CANDIDATE_METRICS for cid, item, sha in cands)
    replace_values(store, inputs.run_id, {m: {impl[m]} for m in CANDIDATE_METRICS}, rows, scopes=("candidate",))
    info = {"digest": cand_digest, "count": len(cands), "distinct": len(pairs)}
    for row in stored_corpus(store, inputs.run_id, CANDIDATE_METRICS):
        if row.implementation == impl[row.metric]:
            set_corpus_details(store, inputs.run_id, row.metric, row.implementation, {**row.details, "candidates": info})
    result.candidates = len(cands)
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

