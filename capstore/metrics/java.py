"""Java for the coco-caption metrics: finding it, time-outs, and the PTB tokenizer in one JVM call.

The tokenizer is pycocoevalcap's own (``PTBTokenizer``: Stanford CoreNLP 3.4.1's PTBTokenizer with
``-preserveLines -lowerCase``, then its punctuation list removed), called the way its wrapper calls
it, with three differences that change no token: all sentences of a call (references, captions,
candidates) go through one JVM; the temporary file goes to the system temp folder instead of the
package folder (which may be read-only); and any line break inside a sentence becomes a space
(the wrapper replaces only ``\\n``, so a ``\\r`` would shift every later sentence onto the wrong
image). The output is checked to have one line per sentence.

Every JVM capstore starts (this tokenizer, METEOR, SPICE) dies with the process that started it: on
Linux the child asks the kernel for SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``), so
a killed ``capstore eval`` (SIGKILL included, when no ``finally`` runs) leaves no Java behind.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from capstore.errors import CapstoreError

# Seconds; CAPSTORE_JAVA_TIMEOUT overrides every Java step's limit.
TIMEOUTS = {"tokenize": 600.0, "meteor": 1800.0, "spice": 3600.0}
_LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


class MetricError(CapstoreError):
    """A metric could not be computed (Java missing, a time-out, a scorer that failed)."""


def timeout(step: str) -> float:
    """The time-out of a Java step in seconds (``CAPSTORE_JAVA_TIMEOUT`` wins when set)."""
    value = os.environ.get("CAPSTORE_JAVA_TIMEOUT")
    if value:
        try:
            return float(value)
        except ValueError as exc:
            raise MetricError(f"CAPSTORE_JAVA_TIMEOUT={value!r}: expected a number of seconds") from exc
    return TIMEOUTS[step]


def require_java() -> str:
    """The path of ``java``; a one-line MetricError saying how to get it when there is none."""
    java = shutil.which("java")
    if java is None:
        raise MetricError("Java not found on PATH: BLEU, METEOR, ROUGE-L, CIDEr and SPICE need it (PTBTokenizer, "
                          "METEOR); install a Java runtime (e.g. apt-get install default-jre-headless)")
    return java


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # looked up here, in the parent: the child between fork and exec only calls it


def dies_with_parent() -> dict[str, Any]:
    """``subprocess`` keyword arguments that make the child get SIGKILL when this process dies.

    The kernel sends the signal when the *thread* that started the child ends, so start a child
    from the thread that waits for it (capstore does). If this process died between the fork and
    the ``prctl``, the child sees another parent and exits at once. Nothing on other systems.
    """
    if _PRCTL is None:
        return {}
    prctl, parent = _PRCTL, os.getpid()

    def preexec() -> None:  # runs in the child, before exec: only async-signal-safe calls
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return {"preexec_fn": preexec}


def java_popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` of a JVM that dies with this process."""
    return subprocess.Popen(list(cmd), **kwargs, **dies_with_parent())


def run_java(cmd: Sequence[str], timeout_s: float, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run`` of a JVM that dies with this process (stdout and stderr captured)."""
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout_s,
                          **kwargs, **dies_with_parent())


def meteor_command(jar: str) -> list[str]:
    """The command pycocoevalcap's ``Meteor`` runs (METEOR 1.5 over stdio, English, normalised)."""
    return ["java", "-jar", "-Xmx2G", jar, "-", "-", "-stdio", "-l", "en", "-norm"]


def _tokenizer_module():  # type: ignore[no-untyped-def]
    from pycocoevalcap.tokenizer import ptbtokenizer

    return ptbtokenizer


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """pycocoevalcap's PTB tokenization of each sentence (lower-cased, punctuation removed), one JVM call."""
    if not sentences:
        return []
    ptb = _tokenizer_module()
    java = require_java()
    jar_dir = Path(ptb.__file__).resolve().parent
    text = "\n".join(s.translate(_LINE_BREAKS) for s in sentences)
    limit = timeout("tokenize")
    with tempfile.TemporaryDirectory(prefix="capstore-ptb-") as tmp:
        path = Path(tmp) / "sentences.txt"
        path.write_bytes(text.encode())
        cmd = [java, "-cp", str(jar_dir / ptb.STANFORD_CORENLP_3_4_1_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", str(path)]
        try:
            done = run_java(cmd, limit, cwd=jar_dir)
        except subprocess.TimeoutExpired as exc:
            raise MetricError(f"PTBTokenizer timed out after {limit:g} s on {len(sentences)} sentences "
                              "(raise CAPSTORE_JAVA_TIMEOUT)") from exc
    if done.returncode != 0:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise MetricError(f"PTBTokenizer failed (exit {done.returncode}): {last}")
    lines = done.stdout.decode().split("\n")
    if len(lines) < len(sentences):
        raise MetricError(f"PTBTokenizer returned {len(lines)} lines for {len(sentences)} sentences")
    punct = set(ptb.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in lines[: len(sentences)]]
