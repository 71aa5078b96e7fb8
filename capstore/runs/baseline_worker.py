"""Single-pass baselines (BLIP-2, LLaVA, OpenAI vision) over a claimed batch of items.

One caption per image; with ``num_candidates`` > 1 every sampled caption is stored as a candidate
and, when a scorer is given, the best-scoring one becomes the caption (else the first). A failed
call is an error row and a retry, never a caption.
"""

from __future__ import annotations

from typing import Any

from capstore.backends.base import CallContext
from capstore.runs.config import RunConfig, item_seed
from capstore.runs.mils_worker import MAX_ATTEMPTS, ItemState
from capstore.runs.steps import Step, commit_steps, fail_item, record_error
from capstore.store.engine import Store


class BaselineWorker:
    def __init__(self, store: Store, run_id: int, cfg: RunConfig, worker: str, backends: Any, on_step) -> None:  # type: ignore[no-untyped-def]
        self.store, self.run_id, self.cfg, self.worker = store, run_id, cfg, worker
        self.backends = backends  # models load on first use: a run with nothing left to claim loads none
        self.ctx = CallContext(run_id=run_id, worker=worker)
        self.on_step = on_step

    @property
    def captioner(self):  # type: ignore[no-untyped-def]
        return self.backends.captioner()

    @property
    def scorer(self):  # type: ignore[no-untyped-def]
        return self.backends.scorer() if self.cfg.scorer else None

    def process(self, states: list[ItemState], attempts: dict[int, int]) -> None:
        seeds = [item_seed(self.cfg.seed, st.image.sha256, 0) for st in states]
        outputs = self.captioner.caption([st.image for st in states], seeds, self.ctx)
        steps = []
        for st, out in zip(states, outputs):
            if not out.ok:
                attempt = attempts.get(st.work_id, 1)
                record_error(self.store, self.run_id, st.item_id, "caption", out.error_kind or "error",
                             out.error or "", attempt)
                fail_item(self.store, st.work_id, self.worker, final=attempt >= MAX_ATTEMPTS)
                continue
            texts = list(dict.fromkeys(out.extra.get("candidates") or [out.text]))
            texts = [t for t in texts if t.strip()] or [out.text]
            scores: list[float | None] = [None] * len(texts)
            if self.scorer is not None:
                scores = [float(s) for s in self.scorer.score(st.image, texts, self.ctx)]
            best = max(range(len(texts)), key=lambda i: scores[i]) if self.scorer is not None else 0  # type: ignore[arg-type,return-value]
            kept = [(t, s) for t, s in zip(texts, scores) if s is not None]
            steps.append(Step(st.work_id, st.item_id, 0, [(t, "baseline", s) for t, s in zip(texts, scores)],
                              sorted(kept, key=lambda ts: -ts[1]), final=True, caption=(texts[best], scores[best], 0)))
        if not steps:
            return
        # One transaction for the batch; a step whose lease was lost (another worker has it) is skipped.
        lost = commit_steps(self.store, self.run_id, self.worker, steps, self.cfg.lease_seconds)
        for _ in range(len(steps) - len(lost)):
            self.on_step(True)
