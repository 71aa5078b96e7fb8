"""The coco-caption metrics on PTB-tokenized inputs, exactly as COCOEvalCap computes them.

``gts`` and ``res`` map an image key to its tokenized references and to a one-element list with
its tokenized caption (COCOEvalCap's shapes). Bleu(4), Meteor, Rouge and Cider are pycocoevalcap's
own classes called as COCOEvalCap calls them; only METEOR's Java process gets a time-out (a
watchdog kills it) and is always shut down, also after a failure.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from capstore.metrics.java import MetricError, require_java, timeout
from capstore.metrics.names import BLEU, CIDER, METEOR, ROUGE_L

Gts = dict[Hashable, list[str]]


@dataclass
class Scores:
    """Corpus values and per-image values (in ``gts`` key order) by metric; failures by metric."""

    corpus: dict[str, float] = field(default_factory=dict)
    per_image: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def compute(gts: Gts, res: Gts, metrics: Sequence[str], progress: Callable[[str], Any] = lambda _m: None) -> Scores:
    """The requested COCO metrics (``Bleu_1..4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``) of ``res`` against ``gts``.

    METEOR's JVM is started first, so that it loads its paraphrase tables (seconds) while BLEU,
    ROUGE-L and CIDEr are computed in Python; it is fed afterwards (feeding it from a thread at the
    same time would wait on the GIL for every one of its per-image round trips). Each scorer sees the
    same inputs as in COCOEvalCap.
    """
    out = Scores()
    wanted = set(metrics)
    job: MeteorJob | None = None
    if METEOR in wanted:
        try:
            job = MeteorJob()
        except MetricError as exc:
            out.failed[METEOR] = str(exc)
    try:
        if wanted & set(BLEU):
            progress("BLEU")
            from pycocoevalcap.bleu.bleu import Bleu

            score, scores = Bleu(4).compute_score(gts, res, verbose=0)
            for name, corpus, per in zip(BLEU, score, scores):
                if name in wanted:
                    out.corpus[name], out.per_image[name] = float(corpus), [float(v) for v in per]
        for name, module, cls in ((ROUGE_L, "rouge.rouge", "Rouge"), (CIDER, "cider.cider", "Cider")):
            if name in wanted:
                progress(name)
                import importlib

                scorer = getattr(importlib.import_module(f"pycocoevalcap.{module}"), cls)()
                score, scores = scorer.compute_score(gts, res)
                out.corpus[name], out.per_image[name] = float(score), [float(v) for v in scores]
        if job is not None:
            progress(METEOR)
            try:
                out.corpus[METEOR], out.per_image[METEOR] = job.result(gts, res)
            except MetricError as exc:
                out.failed[METEOR] = str(exc)
    finally:
        if job is not None:
            job.close()
    return out


def _meteor_class():  # type: ignore[no-untyped-def]
    from pycocoevalcap.meteor.meteor import Meteor

    class SafeMeteor(Meteor):
        """pycocoevalcap's Meteor, shut down by ``close()``: its own ``__del__`` waits forever on a
        lock that a failed ``compute_score`` never released."""

        def close(self) -> None:
            if self.lock.locked():
                self.lock.release()
            try:
                self.meteor_p.stdin.close()
            except OSError:
                pass
            self.meteor_p.kill()
            self.meteor_p.wait()

        def __del__(self) -> None:
            pass

    return SafeMeteor


class MeteorJob:
    """METEOR 1.5 (pycocoevalcap's Meteor) in its JVM, killed ``timeout('meteor')`` seconds after its start."""

    def __init__(self) -> None:
        require_java()
        self.limit = timeout("meteor")
        self.scorer = _meteor_class()()
        self.fired = threading.Event()
        self.watchdog = threading.Timer(self.limit, self._kill)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _kill(self) -> None:
        self.fired.set()
        self.scorer.meteor_p.kill()

    def result(self, gts: Gts, res: Gts) -> tuple[float, list[float]]:
        try:
            score, scores = self.scorer.compute_score(gts, res)
        except (ValueError, OSError) as exc:  # killed: empty reads and broken pipes
            if self.fired.is_set():
                raise MetricError(f"METEOR timed out after {self.limit:g} s (raise CAPSTORE_JAVA_TIMEOUT)") from exc
            proc = self.scorer.meteor_p
            err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.poll() is not None else []
            raise MetricError(f"METEOR failed: {err[-1] if err else exc}") from exc
        return float(score), [float(v) for v in scores]

    def close(self) -> None:
        self.watchdog.cancel()
        self.scorer.close()


def meteor(gts: Gts, res: Gts) -> tuple[float, list[float]]:
    """METEOR alone (starts and stops its JVM)."""
    job = MeteorJob()
    try:
        return job.result(gts, res)
    finally:
        job.close()
