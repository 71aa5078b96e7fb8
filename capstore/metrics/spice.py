"""SPICE through pycocoevalcap's ``spice-1.0.jar``, only when its Stanford CoreNLP jars are present.

pycocoevalcap's ``Spice`` class downloads CoreNLP on first use; capstore never downloads, so it
checks for the jars and otherwise reports SPICE as unavailable with how to enable it. When they are
there, the jar is run with the arguments ``Spice.compute_score`` uses (minus its on-disk cache),
with a time-out, and read back the same way: per image ``scores['All']['f']``, corpus = their mean.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
from pathlib import Path
from typing import Hashable

from capstore.metrics.java import MetricError, require_java, run_java, timeout

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def spice_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __init__, no origin
    if spec is None or not spec.submodule_search_locations:
        raise MetricError("pycocoevalcap is not installed (pip install pycocoevalcap)")
    return Path(list(spec.submodule_search_locations)[0]).resolve() / "spice"


def unavailable_reason() -> str | None:
    """None when SPICE can run, else a one-line hint how to enable it."""
    lib = spice_dir() / "lib"
    missing = [j for j in CORENLP_JARS if not (lib / j).is_file()]
    if not missing:
        return None
    return (f"needs Stanford CoreNLP 3.6.0 ({', '.join(missing)}) in {lib}: copy both jars there from "
            "stanford-corenlp-full-2015-12-09.zip (capstore never downloads them)")


def spice(gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]]) -> tuple[float, list[float]]:
    """(corpus SPICE, per-image SPICE in ``gts`` order); NaN where SPICE gives no score for an image."""
    java = require_java()
    keys = list(gts)
    index = {str(k): k for k in keys}
    data = [{"image_id": str(k), "test": res[k][0], "refs": gts[k]} for k in keys]
    limit = timeout("spice")
    with tempfile.TemporaryDirectory(prefix="capstore-spice-") as tmp:
        src, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps(data))
        cmd = [java, "-jar", "-Xmx8G", "spice-1.0.jar", str(src), "-out", str(out), "-subset", "-silent"]
        try:
            done = run_java(cmd, limit, cwd=spice_dir())
        except subprocess.TimeoutExpired as exc:
            raise MetricError(f"SPICE timed out after {limit:g} s (raise CAPSTORE_JAVA_TIMEOUT)") from exc
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise MetricError(f"SPICE failed (exit {done.returncode}): {last}")
        results = json.loads(out.read_text())
    import numpy as np

    by_key = {index[str(r["image_id"])]: _float(r["scores"]["All"]["f"]) for r in results}
    per = [by_key.get(k, math.nan) for k in keys]
    return float(np.mean(np.array(list(by_key.values())))) if by_key else math.nan, per


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
