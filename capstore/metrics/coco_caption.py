"""METEOR and ROUGE-L on PTB-tokenized inputs, exactly as COCOEvalCap computes them.

``gts`` and ``res`` map an image key to its tokenized references and to a one-element list with
its tokenized caption (COCOEvalCap's shapes). BLEU and CIDEr-D are computed in DuckDB
(``duckdb_metrics``); ROUGE-L is pycocoevalcap's ``Rouge`` formula with its longest common
subsequences computed bit-parallel (the same integers, ~20x faster); METEOR is METEOR 1.5 in its JVM, fed
the very lines pycocoevalcap's ``Meteor.compute_score`` writes (one ``SCORE ||| refs ||| hyp`` line
per image), so its statistics are pycocoevalcap's.

Three differences in how, not what: the scores are computed from those statistics by
``meteor_scores.meteor_eval`` (METEOR's ``EVAL`` arithmetic, to the last bit or one ulp, without
its 1-2 s of parsing them); the ``SCORE`` lines are written by a writer thread while the
statistics are read back (pycocoevalcap waits for each line's answer before writing the next:
thousands of round trips), and the whole exchange runs in a background thread
(``MeteorJob.start``), so METEOR works while BLEU, CIDEr-D and ROUGE-L are computed. The JVM is
started first, so it loads its paraphrase tables while the texts are tokenized. A watchdog kills
it after ``timeout('meteor')`` seconds, and it is always shut down, also after a failure.
"""

from __future__ import annotations

import os
import subprocess
import threading
from typing import Hashable

from capstore.metrics.java import MetricError, java_popen, meteor_command, require_java, timeout
from capstore.metrics.meteor_scores import meteor_eval

Gts = dict[Hashable, list[str]]
_WRITE_LINES = 256  # SCORE lines per write: METEOR answers while the next ones are being written


def lcs_length(a: list[str], b: list[str]) -> int:
    """The length of the longest common subsequence of two token lists (what pycocoevalcap's ``my_lcs``
    computes with an m x n table), with bit-parallel rows (Hyyrö 2004): one big-integer step per token."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - bin(v).count("1")


def rouge_l(gts: Gts, res: Gts) -> tuple[float, list[float]]:
    """pycocoevalcap's ROUGE-L (``Rouge.calc_score``, beta 1.2): corpus value and per-image values in
    ``gts`` key order. The same tokens (``split(" ")``) and the same float operations; only the
    longest common subsequence is computed faster (its length is an integer: the same)."""
    import numpy as np

    beta = 1.2
    scores = []
    for key in gts:
        candidate = res[key][0].split(" ")
        prec, rec = [], []
        for reference in gts[key]:
            tokens = reference.split(" ")
            lcs = lcs_length(tokens, candidate)
            prec.append(lcs / float(len(candidate)))
            rec.append(lcs / float(len(tokens)))
        prec_max, rec_max = max(prec), max(rec)
        if prec_max != 0 and rec_max != 0:
            scores.append(((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max))
        else:
            scores.append(0.0)
    return float(np.mean(np.array(scores))), [float(v) for v in scores]


def score_lines(gts: Gts, res: Gts) -> list[str]:
    """The ``SCORE`` line of each image, as pycocoevalcap's ``Meteor._stat`` writes it."""
    lines = []
    for key in gts:
        hypothesis = res[key][0].replace("|||", "").replace("  ", " ")
        lines.append(" ||| ".join(("SCORE", " ||| ".join(gts[key]), hypothesis)))
    return lines


def _meteor_process() -> subprocess.Popen[bytes]:
    """METEOR 1.5 over stdio, started as pycocoevalcap's ``Meteor.__init__`` does, tied to this process."""
    import pycocoevalcap.meteor.meteor as module

    return java_popen(meteor_command(module.METEOR_JAR), cwd=os.path.dirname(os.path.abspath(module.__file__)),
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def meteor_processes() -> int:
    """How many METEOR JVMs share the segments (``CAPSTORE_METEOR_PROCESSES``; default 1 below 4 CPUs,
    where a second JVM loading its tables costs more than it saves, else 2)."""
    value = os.environ.get("CAPSTORE_METEOR_PROCESSES")
    if value:
        try:
            return max(1, int(value))
        except ValueError as exc:
            raise MetricError(f"CAPSTORE_METEOR_PROCESSES={value!r}: expected a whole number") from exc
    return 2 if (os.cpu_count() or 1) >= 4 else 1


class MeteorJob:
    """METEOR in its JVMs: started at construction, fed by ``start(gts, res)``, answered by ``result()``.

    With several JVMs (``meteor_processes``) each scores a contiguous share of the ``SCORE`` lines; all
    their statistics, in order, are then scored together (``meteor_eval``). A segment's statistics
    depend on that segment alone, so the values are those of one JVM (and of pycocoevalcap).
    """

    def __init__(self, processes: int | None = None) -> None:
        require_java()
        self.limit = timeout("meteor")
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(processes or meteor_processes()):
                self.processes.append(_meteor_process())
        except BaseException:
            self.close()
            raise
        self.process = self.processes[0]
        self.fired = threading.Event()
        self.watchdog = threading.Timer(self.limit, self._kill)
        self.watchdog.daemon = True
        self.watchdog.start()
        self._thread: threading.Thread | None = None
        self._outcome: tuple[float, list[float]] | BaseException | None = None

    def _kill(self) -> None:
        self.fired.set()
        for process in self.processes:
            process.kill()

    def start(self, gts: Gts, res: Gts) -> None:
        """Score ``res`` against ``gts`` in a background thread."""
        def run() -> None:
            try:
                self._outcome = self._exchange(score_lines(gts, res))
            except BaseException as exc:  # noqa: BLE001 - handed to result()
                self._outcome = exc

        self._thread = threading.Thread(target=run, name="meteor", daemon=True)
        self._thread.start()

    def result(self, gts: Gts | None = None, res: Gts | None = None) -> tuple[float, list[float]]:
        """The corpus METEOR and per-image values (in ``gts`` order); starts the work if not started."""
        if self._thread is None:
            assert gts is not None and res is not None
            self.start(gts, res)
        assert self._thread is not None
        self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, (ValueError, OSError)):  # killed: empty reads and broken pipes
            if self.fired.is_set():
                raise MetricError(f"METEOR timed out after {self.limit:g} s (raise CAPSTORE_JAVA_TIMEOUT)") from outcome
            dead = [p for p in self.processes if p.poll() is not None and p.stderr]
            err = dead[0].stderr.read().decode(errors="replace").strip().splitlines() if dead else []  # type: ignore[union-attr]
            raise MetricError(f"METEOR failed: {err[-1] if err else outcome}") from outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def _exchange(self, lines: list[str]) -> tuple[float, list[float]]:
        share = -(-len(lines) // len(self.processes)) or 1
        parts = [lines[k:k + share] for k in range(0, len(lines), share)] or [[]]
        stats: list[list[str] | BaseException] = [[] for _ in parts]

        def score(k: int) -> None:
            try:
                stats[k] = _segment_stats(self.processes[k], parts[k])
            except BaseException as exc:  # noqa: BLE001 - raised below
                stats[k] = exc

        workers = [threading.Thread(target=score, args=(k,), name=f"meteor-{k}", daemon=True)
                   for k in range(1, len(parts))]
        for worker in workers:
            worker.start()
        score(0)
        for worker in workers:
            worker.join()
        every: list[str] = []
        for part in stats:
            if isinstance(part, BaseException):
                raise part
            every.extend(part)
        return meteor_eval(every)

    def close(self) -> None:
        if hasattr(self, "watchdog"):
            self.watchdog.cancel()
        for process in self.processes:
            try:
                if process.stdin:
                    process.stdin.close()
            except OSError:
                pass
            process.kill()
            process.wait()
        if getattr(self, "_thread", None) is not None:
            self._thread.join(timeout=5)  # type: ignore[union-attr]


def _segment_stats(process: subprocess.Popen[bytes], lines: list[str]) -> list[str]:
    """The statistics line METEOR answers to each ``SCORE`` line, written by a second thread meanwhile."""
    stdin, stdout = process.stdin, process.stdout
    assert stdin is not None and stdout is not None

    def write() -> None:
        try:
            for start in range(0, len(lines), _WRITE_LINES):
                stdin.write("".join(f"{line}\n" for line in lines[start:start + _WRITE_LINES]).encode())
                stdin.flush()
        except OSError:  # the JVM died: the reader sees it too
            pass

    writer = threading.Thread(target=write, name="meteor-writer", daemon=True)
    writer.start()
    stats = [stdout.readline().decode().strip() for _ in lines]
    writer.join()
    if any(not s for s in stats):
        raise ValueError("METEOR closed its output")
    return stats


def meteor(gts: Gts, res: Gts) -> tuple[float, list[float]]:
    """METEOR alone (starts and stops its JVM)."""
    job = MeteorJob()
    try:
        return job.result(gts, res)
    finally:
        job.close()
