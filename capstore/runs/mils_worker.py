"""MILS over a claimed batch of items: iteration 0 from the pool, then generate → score → keep.

The same loop captions images, videos and audio clips: the items' media come from the engine's
loader and the scorer embeds them (``capstore.methods.modalities``: ``encode_images``, or
``encode_media`` for a video or audio scorer, where a medium that cannot be decoded fails its own
item with an error row); everything after that is embeddings and texts.

Work is batched across images: one scorer call embeds all images of the batch, the pool is embedded
once per store (through the embedding cache, under a store-wide lock so that workers starting
together do not all encode it: one does, the others then read it from the cache), iteration 0 is
one matrix product, and each later iteration sends every active image's prompt to the generator in
one call and scores all new candidates in one call (their scores cached, not their embeddings:
``capstore.backends.score_cache``). The batch's steps of an iteration are committed together
(``steps.commit_steps``, one transaction), so a kill loses at most the iteration in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
from sqlalchemy import and_, func, or_, select

from capstore.backends.base import CallContext
from capstore.backends.score_cache import BatchScores, batch_scores, score_texts
from capstore.methods.mils import format_prompt, keep_top, parse_candidates, pool_top, should_stop
from capstore.methods.modalities import embed_media
from capstore.methods.pool import load_pool
from capstore.runs.config import RunConfig, item_seed
from capstore.runs.steps import Step, commit_steps, fail_item, record_error
from capstore.store.alongside import write_alongside, written_if_failed
from capstore.store.content import get_texts, sha256_text
from capstore.store.engine import Store
from capstore.store.locks import store_lock
from capstore.store.schema import Candidate, Caption, IterationState

MAX_ATTEMPTS = 3  # failed generation calls (after the backend's own retries) before an item fails
_PAIRS_PER_QUERY = 200  # (item, caption sha) pairs per lookup: an OR this long stays within SQLite's expression depth


@dataclass
class ItemState:
    work_id: int
    item_id: int
    image: Any  # the item's medium: an ImageRef, or a MediaRef (video, audio clip); ``.sha256`` keys it
    done: int  # iterations committed (-1: none)
    kept: list[tuple[str, float]] = field(default_factory=list)
    history: list[float] = field(default_factory=list)  # best score after each iteration
    embedding: np.ndarray | None = None
    active: bool = True


# An item's step: its state, its new candidates (text, origin, score) and its kept set (text, score), best first.
Result = tuple[ItemState, list[tuple[str, str, float | None]], list[tuple[str, float]]]


class MilsWorker:
    """Runs MILS steps for batches of items of one run, with backends built once per process."""

    def __init__(self, store: Store, run_id: int, cfg: RunConfig, worker: str, backends: Any, on_step) -> None:  # type: ignore[no-untyped-def]
        self.store, self.run_id, self.cfg, self.worker = store, run_id, cfg, worker
        self.backends = backends  # models load on first use: a run with nothing left to claim loads none
        self.ctx = CallContext(run_id=run_id, worker=worker)
        self.on_step = on_step
        self._pool: tuple[list[str], np.ndarray] | None = None
        self._scores = BatchScores()  # the batch in hand's scores (``process``)

    @property
    def scorer(self):  # type: ignore[no-untyped-def]
        return self.backends.scorer()

    @property
    def generator(self):  # type: ignore[no-untyped-def]
        return self.backends.generator()

    def process(self, states: list[ItemState], attempts: dict[int, int]) -> None:
        self.attempts = attempts
        embeddings, failed = embed_media(self.scorer, [st.image for st in states], self.ctx)
        for st, emb in zip(states, embeddings):
            st.embedding = emb
        states = self._drop_undecodable(states, failed)
        self._scores = batch_scores(self.store, self.scorer.model_id, [st.image.sha256 for st in states])
        self._load_progress([st for st in states if st.done >= 0])
        fresh = [st for st in states if st.done < 0]
        if fresh:
            self._iteration_zero(fresh)
        for iteration in range(1, self.cfg.iterations + 1):
            due = [st for st in states if st.active and st.done == iteration - 1]
            if due:
                self._iteration(due, iteration)

    def _drop_undecodable(self, states: list[ItemState], failed: dict[str, str]) -> list[ItemState]:
        """Fail (for good, with an error row) the items whose medium the scorer could not decode."""
        for st in states:
            if st.image.sha256 in failed:
                kind = getattr(st.image, "kind", "image")
                record_error(self.store, self.run_id, st.item_id, f"encode_{kind}", f"corrupt_{kind}",
                             failed[st.image.sha256])
                fail_item(self.store, st.work_id, self.worker, final=True)
        return [st for st in states if st.image.sha256 not in failed]

    # -- iteration 0 ----------------------------------------------------------------------------

    def _pool_matrix(self) -> tuple[list[str], np.ndarray]:
        if self._pool is None:
            assert self.cfg.pool_sha is not None
            lines = load_pool(self.store, self.cfg.pool_sha)
            scorer = self.scorer
            with store_lock(self.store, f"encode-pool:{scorer.model_id}:{self.cfg.pool_sha}"):
                matrix = scorer.encode_texts(lines, CallContext(self.run_id, self.worker, "encode_pool"))
            self._pool = (lines, matrix)
        return self._pool

    def _iteration_zero(self, states: list[ItemState]) -> None:
        lines, pool = self._pool_matrix()
        images = np.stack([st.embedding for st in states])
        scores = images @ pool.T  # every pool line against every image, in one product
        seeds = self._init_seeds([st.item_id for st in states])
        seed_texts = sorted({t for ts in seeds.values() for t in ts})
        seed_emb = self.scorer.encode_texts(seed_texts, self.ctx) if seed_texts else None
        results = []
        for row, st in enumerate(states):
            found = dict(pool_top(lines, scores[row], self.cfg.keep))  # MILS's order: ties in pool order
            new = [(t, "pool", s) for t, s in found.items()]
            for text in seeds.get(st.item_id, []):
                score = float(seed_emb[seed_texts.index(text)] @ st.embedding)  # type: ignore[index]
                found[text] = score
                new = [c for c in new if c[0] != text] + [(text, "seed", score)]
            results.append((st, new, keep_top(found, self.cfg.keep)))
        self._commit(0, results)

    def _init_seeds(self, item_ids: list[int]) -> dict[int, list[str]]:
        """Hybrid start: the captions and candidates another run produced for these items."""
        if self.cfg.init_from is None:
            return {}
        with self.store.read() as s:
            pairs = s.execute(select(Caption.item_id, Caption.text_sha).where(
                Caption.run_id == self.cfg.init_from, Caption.item_id.in_(item_ids))).all()
            pairs += s.execute(select(Candidate.item_id, Candidate.text_sha).where(
                Candidate.run_id == self.cfg.init_from, Candidate.item_id.in_(item_ids))).all()
            texts = get_texts(s, [sha for _, sha in pairs])
        out: dict[int, list[str]] = {}
        for item_id, sha in pairs:
            if texts[sha] not in out.setdefault(item_id, []):
                out[item_id].append(texts[sha])
        return out

    # -- iterations 1..N ------------------------------------------------------------------------

    def _iteration(self, states: list[ItemState], iteration: int) -> None:
        # The backends' store writes of this iteration (new generations and scores, usage events) are
        # committed beside its steps (``_commit``): the worker does not wait for each in turn. If the
        # iteration fails before that, what its backends computed is still written (cached).
        writes: list[Callable[[], None]] = []
        with written_if_failed(writes):
            results = self._results(states, iteration, replace(self.ctx, writes=writes))
        self._commit(iteration, results, writes)

    def _results(self, states: list[ItemState], iteration: int, ctx: CallContext) -> list[Result]:
        """Generate, parse and score one iteration of ``states``: each active item's new candidates and kept set."""
        prompts = [format_prompt(self.cfg.prompt or "", st.kept, self.cfg.requested) for st in states]
        seeds = [item_seed(self.cfg.seed, st.image.sha256, iteration) for st in states]
        outputs = self.generator.generate(prompts, seeds, ctx)
        parsed: list[list[str]] = []
        for st, out in zip(states, outputs):
            if not out.ok:  # the call failed (API): nothing to commit; the item goes back for a retry
                attempt = self.attempts.get(st.work_id, 1)
                record_error(self.store, self.run_id, st.item_id, "generate", out.error_kind or "error",
                             out.error or "", attempt)
                fail_item(self.store, st.work_id, self.worker, final=attempt >= MAX_ATTEMPTS)
                st.active = False
                parsed.append([])
                continue
            texts = parse_candidates(out.text)
            if not texts:  # garbage output: recorded, and the iteration goes on with what it has
                record_error(self.store, self.run_id, st.item_id, "generate", "unparsable_output",
                             f"iteration {iteration}: no 'N. text' lines in: {out.text[:200]!r}")
            kept_texts = {t for t, _ in st.kept}
            parsed.append([t for t in texts if t not in kept_texts])
        active = [(st, texts) for st, texts in zip(states, parsed) if st.active]
        scores = score_texts(self.store, self.scorer, [(st.image.sha256, st.embedding) for st, _ in active],
                             [texts for _, texts in active], ctx, self._scores)
        results = []
        for (st, texts), scored in zip(active, scores):
            kept = keep_top({**dict(st.kept), **scored}, self.cfg.keep)
            results.append((st, [(t, "generated", s) for t, s in scored.items()], kept))
        return results

    # -- commits --------------------------------------------------------------------------------

    def _commit(self, iteration: int, results: list[Result], writes: Sequence[Callable[[], None]] = ()) -> None:
        """Commit the (item, iteration) steps of the batch in one transaction, then advance the items.

        ``writes`` (the iteration's backend writes: transactions of their own, which the steps do not
        need) are committed beside it (``write_alongside``); all have ended when this returns."""
        steps, histories = [], []
        for st, new, kept in results:
            history = st.history + [kept[0][1] if kept else float("-inf")]
            stop = None
            if self.cfg.early_stop and iteration < self.cfg.iterations:
                patience, eps = self.cfg.early_stop
                stop = should_stop(history, patience, eps)
            final = iteration >= self.cfg.iterations or bool(stop)
            caption = (kept[0][0], kept[0][1], iteration) if final and kept else None
            steps.append(Step(st.work_id, st.item_id, iteration, new, kept, final=final, stopped_early=bool(stop),
                              caption=caption))
            histories.append(history)
        self._date_captions(steps)

        def commit() -> list[Step]:
            return commit_steps(self.store, self.run_id, self.worker, steps, self.cfg.lease_seconds) if steps else []

        lost = {id(step) for step in write_alongside(self.store, commit, writes)}
        for (st, _, kept), step, history in zip(results, steps, histories):
            if id(step) in lost:  # another worker has the item now
                st.active = False
                continue
            st.done, st.kept, st.history = iteration, kept, history
            st.active = not step.final
            self.on_step(step.final)

    def _date_captions(self, steps: list[Step]) -> None:
        """Set each final step's caption iteration to the one at which its text first became a
        candidate of the item (kept as the step's own iteration when it is new there).

        One query for the batch's finished items, not one per item: the batch's last commit has all
        of them finish together."""
        dated = [st for st in steps if st.caption]
        if not dated:
            return
        first = first_candidate_iterations(self.store, self.run_id,
                                           [(st.item_id, sha256_text(st.caption[0])) for st in dated])  # type: ignore[index]
        for st in dated:
            text, score, iteration = st.caption  # type: ignore[misc]
            st.caption = (text, score, first.get(st.item_id, iteration))

    def _load_progress(self, states: list[ItemState]) -> None:
        """Resume: the kept set and best-score history of items with committed iterations."""
        if not states:
            return
        with self.store.read() as s:
            rows = s.execute(select(IterationState.item_id, IterationState.iteration, IterationState.best_score,
                                    IterationState.kept).where(
                IterationState.run_id == self.run_id,
                IterationState.item_id.in_([st.item_id for st in states])).order_by(IterationState.iteration)).all()
            texts = get_texts(s, [sha for r in rows for sha, _ in r.kept])
        by_item = {st.item_id: st for st in states}
        for item_id, iteration, best, kept in rows:
            st = by_item[item_id]
            if iteration <= st.done:
                st.history.append(best if best is not None else float("-inf"))
                if iteration == st.done:
                    st.kept = [(texts[sha], score) for sha, score in kept]


def first_candidate_iterations(store: Store, run_id: int, pairs: Sequence[tuple[int, str]]) -> dict[int, int]:
    """For (item id, text sha) pairs, one an item, the first iteration at which that text was a
    candidate of that item in ``run_id`` (items whose text never was are absent)."""
    first: dict[int, int] = {}
    with store.read() as s:
        # One index probe per pair, on both databases: an OR of (run, item, sha) terms. With
        # item IN … AND sha IN … PostgreSQL tests every candidate of the items against the whole sha
        # list, and with (item, sha) IN (VALUES …) SQLite reads the whole run (0.3–0.5 s a query).
        for start in range(0, len(pairs), _PAIRS_PER_QUERY):
            rows = s.execute(select(Candidate.item_id, func.min(Candidate.iteration)).where(or_(*(
                and_(Candidate.run_id == run_id, Candidate.item_id == item_id, Candidate.text_sha == sha)
                for item_id, sha in pairs[start:start + _PAIRS_PER_QUERY]))).group_by(Candidate.item_id)).all()
            first.update((int(item_id), int(iteration)) for item_id, iteration in rows)
    return first
